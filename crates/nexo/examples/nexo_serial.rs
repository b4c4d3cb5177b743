//! A stand-in POI on a serial link, for the interop tests
//! (interop/test_serial_pyserial.py): opens a serial device (a pty made by
//! socat, a USB-serial adapter, `/dev/rfcomm0`) and answers the nexo
//! requests framed on it with [`nexo::serial_io::serve`].
//!
//! ```text
//! nexo_serial PATH [--baud N] [--poi-id ID] [--ack-timeout-ms N]
//!                  [--inter-byte-timeout-ms N] [--max-retransmissions N]
//! ```
//!
//! `LoginRequest`, `LogoutRequest` and `DiagnosisRequest` get their
//! success responses; any other request `Failure` `NotAllowed`; a message
//! that cannot be read the nexo answer to its fault (a `Reject`
//! notification, a `MessageFormat` failure). Prints `ready` on standard
//! output once the device is open; exits 0 when the device closes, 1 on an
//! I/O error, 2 on a usage error.

use std::process::ExitCode;

use nexo::inbound::{Refusal, Reply, Security, parse_request, screen, timestamp};
use nexo::message::{RequestBody, ResponseBody, SaleToPoiRequest, SaleToPoiResponse};
use nexo::model::{
    DiagnosisResponse, LoginResponse, LogoutResponse, PoiSoftware, PoiStatus, PoiSystemData,
    PoiTerminalData, Response,
};
use nexo::serial::Config;
use nexo::serial_io::{ServeConfig, open, serve};
use nexo::wire::{ErrorCondition, GlobalStatus, PoiCapability, TerminalEnvironment};
use time::OffsetDateTime;

fn usage() -> ExitCode {
    eprintln!(
        "usage: nexo_serial PATH [--baud N] [--poi-id ID] [--ack-timeout-ms N] \
         [--inter-byte-timeout-ms N] [--max-retransmissions N]"
    );
    ExitCode::from(2)
}

/// The answer of terminal `poi_id` to the message `body`.
fn answer(poi_id: &str, body: &[u8]) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let reply = match parse_request(body, Security::Plain) {
        Ok(inbound) => respond(&inbound.message, now),
        Err(e) => e.reply(poi_id, body, now),
    };
    reply.to_json().into_bytes()
}

fn respond(request: &SaleToPoiRequest, now: OffsetDateTime) -> Reply {
    if let Err(refusal) = screen(request) {
        return refusal.reply(request, now);
    }
    let status = PoiStatus {
        global_status: GlobalStatus::Ok,
        security_ok_flag: Some(true),
        ped_ok_flag: None,
        card_reader_ok_flag: None,
        printer_status: None,
        communication_ok_flag: Some(true),
    };
    let body = match &request.body {
        RequestBody::Login(_) => ResponseBody::Login(LoginResponse {
            response: Response::success(),
            poi_system_data: Some(PoiSystemData {
                date_time: timestamp(now),
                poi_software: PoiSoftware {
                    manufacturer_id: "posnet".into(),
                    application_name: "nexo_serial".into(),
                    software_version: env!("CARGO_PKG_VERSION").into(),
                    certification_code: "none".into(),
                },
                poi_terminal_data: Some(PoiTerminalData {
                    terminal_environment: TerminalEnvironment::Attended,
                    poi_capabilities: vec![PoiCapability::CashierDisplay],
                    poi_serial_number: "SERIAL-1".into(),
                }),
                poi_status: Some(status),
            }),
        }),
        RequestBody::Logout(_) => ResponseBody::Logout(LogoutResponse {
            response: Response::success(),
        }),
        RequestBody::Diagnosis(_) => ResponseBody::Diagnosis(DiagnosisResponse {
            response: Response::success(),
            logged_sale_id: request.header.sale_id.iter().cloned().collect(),
            poi_status: Some(status),
            host_status: Vec::new(),
        }),
        _ => {
            let refusal = Refusal {
                condition: ErrorCondition::NotAllowed,
                reason: format!(
                    "{} is not served by this stand-in",
                    request.body.category().request_member()
                ),
            };
            return refusal.reply(request, now);
        }
    };
    Reply::Response(SaleToPoiResponse::answer(&request.header, body))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first().filter(|a| !a.starts_with("--")) else {
        return usage();
    };
    let mut baud = 115_200;
    let mut poi_id = "posnet-terminal-1".to_owned();
    let mut link = Config::default();
    for pair in args[1..].chunks(2) {
        let [name, value] = pair else {
            return usage();
        };
        let parsed = match name.as_str() {
            "--baud" => value.parse().map(|v| baud = v).is_ok(),
            "--poi-id" => {
                poi_id.clone_from(value);
                true
            }
            "--ack-timeout-ms" => value.parse().map(|v| link.ack_timeout_ms = v).is_ok(),
            "--inter-byte-timeout-ms" => value
                .parse()
                .map(|v| link.inter_byte_timeout_ms = v)
                .is_ok(),
            "--max-retransmissions" => value.parse().map(|v| link.max_retransmissions = v).is_ok(),
            _ => false,
        };
        if !parsed {
            return usage();
        }
    }
    let port = match open(path, baud) {
        Ok(port) => port,
        Err(e) => {
            eprintln!("nexo_serial: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("ready");
    // No notifications from this stand-in: the channel's sender is dropped.
    let (_, notifications) = tokio::sync::mpsc::channel(1);
    let config = ServeConfig {
        link,
        ..ServeConfig::default()
    };
    let handler = |body: Vec<u8>| {
        let reply = answer(&poi_id, &body);
        async move { reply }
    };
    match serve(port, config, handler, notifications, std::future::pending()).await {
        Ok(stats) => {
            eprintln!("nexo_serial: device closed; {stats:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nexo_serial: {e}");
            ExitCode::FAILURE
        }
    }
}
