//! Reads a nexo message on standard input the way a posnet terminal (or
//! phone) does, and prints what it made of it. Used by the interop tests
//! against Adyen's Node library (interop/node/nexo_messages.test.mjs).
//!
//! ```text
//! nexo_check request    # prints the request as posnet re-serializes it
//! nexo_check response   # the same for a response
//! nexo_check answer     # prints posnet's answer when it would not serve
//!                       # the request (error or refusal), nothing otherwise
//! nexo_check model      # prints the enumerations and body members as JSON
//! ```
//!
//! With `--key-id ID --key-version N` and the passphrase in
//! `NEXO_PASSPHRASE`, secured messages are opened (and answers secured).
//! Exit status: 0 when the message was read, 1 when it was not (the
//! error on standard error), 2 on a usage error.

use std::io::Read;
use std::process::ExitCode;

use nexo::inbound::{Security, parse_request, parse_response, screen};
use nexo::message::ToJson;
use nexo::wire::{MessageCategory, all_enumerations};
use paycrypto::nexo::NexoKey;
use serde_json::json;
use time::OffsetDateTime;

fn usage() -> ExitCode {
    eprintln!(
        "usage: nexo_check request|response|answer|model [--key-id ID --key-version N] \
         (passphrase in NEXO_PASSPHRASE)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        return usage();
    };
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let key = match (option("--key-id"), option("--key-version")) {
        (Some(id), Some(version)) => {
            let Ok(version) = version.parse() else {
                return usage();
            };
            let passphrase = std::env::var("NEXO_PASSPHRASE").unwrap_or_default();
            match NexoKey::derive(&passphrase, id, version) {
                Ok(key) => Some(key),
                Err(e) => {
                    eprintln!("nexo_check: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        (None, None) => None,
        _ => return usage(),
    };
    let security = key.as_ref().map_or(Security::Plain, Security::Optional);

    if command == "model" {
        let members: Vec<_> = MessageCategory::ALL
            .iter()
            .map(|c| json!([c.as_str(), c.request_member(), c.response_member()]))
            .collect();
        let enums: serde_json::Map<String, serde_json::Value> = all_enumerations()
            .into_iter()
            .map(|(name, values)| (name.to_owned(), json!(values)))
            .collect();
        println!("{}", json!({ "enumerations": enums, "members": members }));
        return ExitCode::SUCCESS;
    }

    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return usage();
    }
    match command.as_str() {
        "request" => match parse_request(&input, security) {
            Ok(read) => {
                println!("{}", read.message.to_json());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nexo_check: {e}");
                ExitCode::FAILURE
            }
        },
        "response" => match parse_response(&input, security) {
            Ok(read) => {
                println!("{}", read.message.to_json());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("nexo_check: {e}");
                ExitCode::FAILURE
            }
        },
        "answer" => {
            let now = OffsetDateTime::now_utc();
            let (reply, secure) = match parse_request(&input, security) {
                Err(e) => (Some(e.reply("posnet-terminal-1", &input, now)), false),
                Ok(read) => match screen(&read.message) {
                    Ok(()) => (None, false),
                    Err(refusal) => (Some(refusal.reply(&read.message, now)), read.secured),
                },
            };
            if let Some(reply) = reply {
                let key = if secure { key.as_ref() } else { None };
                match reply.encode(key) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("nexo_check: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
