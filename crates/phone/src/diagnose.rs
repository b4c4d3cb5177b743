//! `diagnose`: what stands between the phone and its terminal, step by
//! step — the address resolves, a TCP connection opens, the TLS
//! certificate is the pinned one, the terminal accepts the phone's key
//! (a `DiagnosisRequest` answered), the terminal is well, reaches its
//! payment host and has signed on, the phone is logged in — each with
//! what it found and what to do. Steps after a failed one are skipped.

use serde::Serialize;

use nexo::model::DiagnosisResponse;
use nexo::wire::GlobalStatus;

use crate::client::{Event, Phone, PhoneError};
use crate::explain;
use crate::transport::{Transport, TransportError};

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but something needs attention.
    Warning,
    /// Failed: the phone cannot pay through this terminal.
    Failed,
    /// Not tried (an earlier step failed).
    Skipped,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it went.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, when something is wrong.
    pub advice: Option<String>,
}

/// Every step, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The terminal's `POIID`.
    pub poi_id: String,
    /// The terminal's address.
    pub address: String,
    /// The phone's `SaleID`.
    pub sale_id: String,
    /// The steps.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether no step failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Failed)
    }
}

const STEPS: [&str; 8] = [
    "address resolves",
    "TCP connects",
    "TLS certificate matches the pairing",
    "terminal accepts the phone's key",
    "terminal is well",
    "payment host reachable",
    "terminal signed on to its host",
    "phone logged in",
];

struct Steps {
    checks: Vec<Check>,
}

impl Steps {
    fn push(&mut self, status: Status, detail: String, advice: Option<&str>) {
        let name = STEPS[self.checks.len()];
        self.checks.push(Check {
            name,
            status,
            detail,
            advice: advice.map(str::to_owned),
        });
    }

    fn ok(&mut self, detail: String) {
        self.push(Status::Ok, detail, None);
    }

    /// A failure, and every remaining step skipped.
    fn fail(mut self, detail: String, advice: &str) -> Vec<Check> {
        self.push(Status::Failed, detail, Some(advice));
        while self.checks.len() < STEPS.len() {
            self.push(Status::Skipped, "an earlier step failed".into(), None);
        }
        self.checks
    }
}

const NETWORK: &str = "check that the phone is on the same network as the terminal, that the terminal is on and shows its ECR service, and that the pairing's address is the terminal's (pair again if it moved)";

impl Phone {
    /// Runs every step.
    pub async fn diagnose(&mut self) -> Report {
        let (poi_id, sale_id) = (self.pairing().poi_id.clone(), self.sale_id().to_owned());
        let mut steps = Steps { checks: Vec::new() };
        let https = match self.transport() {
            Transport::Https(https) => https.clone(),
            Transport::Serial(serial) => {
                // No address, connection or certificate on a cable.
                let address = serial.device().to_owned();
                for _ in 0..3 {
                    steps.push(Status::Skipped, format!("serial link on {address}"), None);
                }
                let checks = self.nexo_steps(steps, &sale_id).await;
                return Report {
                    poi_id,
                    address,
                    sale_id,
                    checks,
                };
            }
        };
        let report = |checks| Report {
            poi_id: poi_id.clone(),
            address: https.authority(),
            sale_id: sale_id.clone(),
            checks,
        };

        let addrs = match https.resolve().await {
            Ok(addrs) => addrs,
            Err(e) => return report(steps.fail(e.to_string(), NETWORK)),
        };
        let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        steps.ok(shown.join(", "));

        let tcp = match https.connect_tcp(&addrs).await {
            Ok(tcp) => tcp,
            Err(e) => return report(steps.fail(e.to_string(), NETWORK)),
        };
        let peer = tcp
            .peer_addr()
            .map_or_else(|_| https.authority(), |a| a.to_string());
        steps.ok(format!("connected to {peer}"));

        match https.handshake(tcp).await {
            Ok(_) => steps.ok(format!(
                "the terminal presented the pinned certificate {}",
                self.pairing().fingerprint()
            )),
            Err(e @ TransportError::CertificateMismatch(_)) => {
                return report(steps.fail(
                    e.to_string(),
                    "if the terminal was replaced or its certificate renewed, pair again with the code it shows; otherwise do not pay through this network and tell the merchant",
                ));
            }
            Err(e) => {
                return report(steps.fail(
                    e.to_string(),
                    "the terminal's TLS service is not answering as expected: restart the terminal's ECR service",
                ));
            }
        }

        report(self.nexo_steps(steps, &sale_id).await)
    }

    /// The steps from the key on: a `DiagnosisRequest` and its answer.
    async fn nexo_steps(&mut self, mut steps: Steps, sale_id: &str) -> Vec<Check> {
        let mut progress = |_: Event| {};
        let diagnosis = match self.diagnosis(&mut progress).await {
            Ok(d) => d,
            Err(e @ PhoneError::KeyRejected { .. }) => {
                return steps.fail(e.to_string(), "pair again with the code the terminal shows");
            }
            Err(e) => {
                return steps.fail(
                    e.to_string(),
                    "the terminal did not answer a diagnosis: restart its ECR service, then try again",
                );
            }
        };
        steps.ok(format!(
            "DiagnosisRequest answered {}",
            explain::reason(&diagnosis.response)
        ));
        judge_diagnosis(steps, &diagnosis, sale_id)
    }
}

/// The steps read from the terminal's `DiagnosisResponse`.
fn judge_diagnosis(mut steps: Steps, d: &DiagnosisResponse, sale_id: &str) -> Vec<Check> {
    match &d.poi_status {
        Some(s) if s.global_status == GlobalStatus::Ok => {
            let mut bad = Vec::new();
            for (flag, what) in [
                (s.security_ok_flag, "security"),
                (s.ped_ok_flag, "PIN pad"),
                (s.card_reader_ok_flag, "card reader"),
            ] {
                if flag == Some(false) {
                    bad.push(what);
                }
            }
            if bad.is_empty() {
                steps.ok("GlobalStatus OK".into());
            } else {
                steps.push(
                    Status::Warning,
                    format!("GlobalStatus OK but not OK: {}", bad.join(", ")),
                    Some("have the terminal serviced before card payments fail"),
                );
            }
        }
        Some(s) => steps.push(
            Status::Failed,
            format!("GlobalStatus {}", s.global_status),
            Some("the terminal reports a fault: see its screen, restart it, have it serviced"),
        ),
        None => steps.push(
            Status::Warning,
            "the terminal gave no POIStatus".into(),
            None,
        ),
    }

    let reachable: Vec<&str> = d
        .host_status
        .iter()
        .filter(|h| h.is_reachable_flag == Some(true))
        .map(|h| h.acquirer_id.as_str())
        .collect();
    let link_up = d.poi_status.as_ref().and_then(|s| s.communication_ok_flag);
    match (reachable.is_empty(), link_up, d.host_status.is_empty()) {
        (false, _, _) => steps.ok(format!("reachable: {}", reachable.join(", "))),
        (true, Some(true), true) => steps.ok("the terminal's host link is up".into()),
        (true, None, true) => steps.push(
            Status::Warning,
            "the terminal does not say".into(),
            None,
        ),
        _ => steps.push(
            Status::Failed,
            "no payment host is reachable from the terminal".into(),
            Some("payments will be declined (or approved offline under the floor limit): check the terminal's network or its host; take other means of payment meanwhile"),
        ),
    }

    let additional = d
        .response
        .additional_response
        .as_deref()
        .map(explain::pairs)
        .unwrap_or_default();
    let value = |key: &str| {
        additional
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let pending = value("pendingAdvices")
        .filter(|p| *p != "0")
        .map(|p| format!("; {p} offline approval(s) waiting to be forwarded"))
        .unwrap_or_default();
    match value("signedOn") {
        Some("true") => steps.ok(format!("signed on{pending}")),
        Some(_) => steps.push(
            Status::Failed,
            format!("not signed on{pending}"),
            Some("the terminal signs on by itself once its host answers; if it stays so, check the terminal's enrollment with its host"),
        ),
        None => steps.push(Status::Warning, "the terminal does not say".into(), None),
    }

    if d.logged_sale_id.iter().any(|s| s == sale_id) {
        steps.ok(format!("{sale_id} is logged in"));
    } else {
        steps.push(
            Status::Warning,
            format!("{sale_id} is not logged in"),
            Some("run `posnet phone login --operator ID` before the first payment"),
        );
    }
    steps.checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexo::inbound::{Security, parse_response};
    use nexo::message::ResponseBody;

    fn fixture() -> DiagnosisResponse {
        let answer = parse_response(
            include_bytes!("../../nexo/tests/fixtures/responses/diagnosis.json"),
            Security::Plain,
        )
        .unwrap()
        .message;
        match answer.body {
            ResponseBody::Diagnosis(d) => d,
            _ => unreachable!("a diagnosis fixture"),
        }
    }

    fn four_ok() -> Steps {
        let mut steps = Steps { checks: Vec::new() };
        for _ in 0..4 {
            steps.ok(String::new());
        }
        steps
    }

    fn statuses(checks: &[Check]) -> Vec<(&str, Status)> {
        checks.iter().map(|c| (c.name, c.status)).collect()
    }

    #[test]
    fn reads_the_terminals_diagnosis() {
        // The fixture: backup host reachable, signed on, two advices
        // pending, ECR-1 logged in.
        let checks = judge_diagnosis(four_ok(), &fixture(), "ECR-1");
        assert_eq!(
            statuses(&checks[4..]),
            [
                ("terminal is well", Status::Ok),
                ("payment host reachable", Status::Ok),
                ("terminal signed on to its host", Status::Ok),
                ("phone logged in", Status::Ok),
            ]
        );
        assert_eq!(checks[5].detail, "reachable: posnet-host-backup");
        assert_eq!(
            checks[6].detail,
            "signed on; 2 offline approval(s) waiting to be forwarded"
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let mut d = fixture();
        for h in &mut d.host_status {
            h.is_reachable_flag = Some(false);
        }
        d.response.additional_response = Some("signedOn=false&pendingAdvices=0".into());
        let checks = judge_diagnosis(four_ok(), &d, "phone-1");
        assert_eq!(
            statuses(&checks[5..]),
            [
                ("payment host reachable", Status::Failed),
                ("terminal signed on to its host", Status::Failed),
                ("phone logged in", Status::Warning),
            ]
        );
        assert_eq!(checks[6].detail, "not signed on");
        assert!(
            checks[7]
                .advice
                .as_deref()
                .unwrap()
                .contains("posnet phone login")
        );
    }

    #[test]
    fn a_failed_step_skips_the_rest() {
        let mut steps = Steps { checks: Vec::new() };
        steps.ok("127.0.0.1:8443".into());
        let checks = steps.fail("refused".into(), NETWORK);
        assert_eq!(checks.len(), STEPS.len());
        assert_eq!(checks[1].status, Status::Failed);
        assert!(checks[2..].iter().all(|c| c.status == Status::Skipped));
        let report = Report {
            poi_id: "T".into(),
            address: "a".into(),
            sale_id: "s".into(),
            checks,
        };
        assert!(!report.ok());
    }
}
