//! Finding out what became of a request whose answer was lost (a
//! timeout, a connection cut after sending) or did not belong to it (see
//! [`crate::check`]): the phone asks the terminal with
//! `TransactionStatusRequest`, again and again with backoff while the
//! terminal says `InProgress`, and never sends the request a second time.
//!
//! [`judge`] reads one status answer; [`Recovery`] decides, observation
//! by observation, whether to ask again and when. Both are pure.

use std::time::Duration;

use nexo::message::{ResponseBody, SaleToPoiRequest, SaleToPoiResponse};
use nexo::model::{Response, TransactionStatusResponse};
use nexo::wire::{ErrorCondition, MessageCategory, ResultType};

use crate::check::{self, Mismatch};
use crate::retry::Backoff;

/// What one `TransactionStatusResponse` says about the original request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The original answer, repeated, and it matches the original request.
    Answer(Box<SaleToPoiResponse>),
    /// The terminal is still working on it.
    InProgress,
    /// The terminal knows no such exchange: it never received it.
    NotFound,
    /// The repeated answer is not the original request's.
    Inconsistent(Vec<Mismatch>),
    /// The status request failed for another reason (`Busy`, ...).
    Failed(Response),
}

/// Reads `status`, the answer to a status request about `original`.
pub fn judge(original: &SaleToPoiRequest, status: &TransactionStatusResponse) -> Verdict {
    let response = &status.response;
    if response.result != ResultType::Success {
        return match response.error_condition {
            Some(ErrorCondition::InProgress) => Verdict::InProgress,
            Some(ErrorCondition::NotFound) => Verdict::NotFound,
            _ => Verdict::Failed(response.clone()),
        };
    }
    let absent = |field| {
        Verdict::Inconsistent(vec![Mismatch {
            field,
            expected: "present".into(),
            got: "absent".into(),
        }])
    };
    let Some(repeated) = &status.repeated_message_response else {
        return absent("RepeatedMessageResponse");
    };
    let repeated_body = &repeated.repeated_response_message_body;
    let body = match original.body.category() {
        MessageCategory::Payment => repeated_body
            .payment_response
            .clone()
            .map(ResponseBody::Payment),
        MessageCategory::Reversal => repeated_body
            .reversal_response
            .clone()
            .map(ResponseBody::Reversal),
        _ => None,
    };
    let Some(body) = body else {
        return absent("RepeatedResponseMessageBody");
    };
    let answer = SaleToPoiResponse {
        header: repeated.message_header.clone(),
        body,
    };
    let mismatches = check::response(original, &answer);
    if mismatches.is_empty() {
        Verdict::Answer(Box::new(answer))
    } else {
        Verdict::Inconsistent(mismatches)
    }
}

/// One thing learnt while recovering.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A status answer, judged.
    Verdict(Verdict),
    /// The status request itself failed to get an answer; `fatal` when
    /// asking again cannot help (a certificate mismatch, a key the
    /// terminal rejects).
    Failure {
        /// What failed.
        reason: String,
        /// Whether to stop asking.
        fatal: bool,
    },
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Ask (again) after this pause.
    Ask(Duration),
    /// The terminal's answer to the original request.
    Recovered(Box<SaleToPoiResponse>),
    /// The terminal never received the original request: nothing happened.
    NotReceived,
    /// Stop: the outcome could not be learnt.
    Unknown(String),
}

/// Asking about one lost answer, with a bounded number of status requests.
#[derive(Debug, Clone)]
pub struct Recovery {
    backoff: Backoff,
    asked: u32,
}

impl Recovery {
    /// A recovery asking at most `backoff.attempts` times.
    pub fn new(backoff: Backoff) -> Self {
        Self { backoff, asked: 0 }
    }

    /// Status requests sent so far.
    pub fn asked(&self) -> u32 {
        self.asked
    }

    /// The first step: ask now.
    pub fn start(&mut self) -> Step {
        self.ask_again("no status request could be sent".into())
    }

    fn ask_again(&mut self, why_not: String) -> Step {
        match self.backoff.pause_before(self.asked + 1) {
            Some(pause) => {
                self.asked += 1;
                Step::Ask(pause)
            }
            None => Step::Unknown(format!("{why_not} (after {} status requests)", self.asked)),
        }
    }

    /// The step after `observation` (the outcome of the last request).
    pub fn observe(&mut self, observation: Observation) -> Step {
        match observation {
            Observation::Verdict(Verdict::Answer(answer)) => Step::Recovered(answer),
            Observation::Verdict(Verdict::NotFound) => Step::NotReceived,
            Observation::Verdict(Verdict::InProgress) => {
                self.ask_again("the terminal still reports it in progress".into())
            }
            Observation::Verdict(Verdict::Inconsistent(m)) => Step::Unknown(format!(
                "the terminal's record does not match the request: {}",
                check::describe(&m)
            )),
            Observation::Verdict(Verdict::Failed(response)) => self.ask_again(format!(
                "the status request failed: {}",
                crate::explain::reason(&response)
            )),
            Observation::Failure {
                reason,
                fatal: true,
            } => Step::Unknown(reason),
            Observation::Failure {
                reason,
                fatal: false,
            } => self.ask_again(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexo::inbound::{Security, parse_request, parse_response};

    const PAYMENT: &str = include_str!("../../nexo/tests/fixtures/requests/payment.json");
    const STATUS: &str =
        include_str!("../../nexo/tests/fixtures/responses/transaction-status.json");
    const IN_PROGRESS: &str =
        include_str!("../../nexo/tests/fixtures/responses/transaction-status-in-progress.json");
    const NOT_FOUND: &str =
        include_str!("../../nexo/tests/fixtures/responses/transaction-status-not-found.json");

    fn payment() -> SaleToPoiRequest {
        parse_request(PAYMENT.as_bytes(), Security::Plain)
            .unwrap()
            .message
    }

    fn status(json: &str) -> TransactionStatusResponse {
        match parse_response(json.as_bytes(), Security::Plain)
            .unwrap()
            .message
            .body
        {
            ResponseBody::TransactionStatus(s) => s,
            other => panic!("not a status answer: {other:?}"),
        }
    }

    const FAST: Backoff = Backoff {
        attempts: 3,
        initial: Duration::from_secs(1),
        max: Duration::from_secs(2),
    };

    #[test]
    fn judges_each_status_answer() {
        let original = payment();
        let Verdict::Answer(answer) = judge(&original, &status(STATUS)) else {
            panic!("the repeated answer of the fixture matches the fixture payment");
        };
        assert_eq!(answer.header.service_id.as_deref(), Some("0314092653"));
        assert!(matches!(answer.body, ResponseBody::Payment(_)));
        assert_eq!(judge(&original, &status(IN_PROGRESS)), Verdict::InProgress);
        assert_eq!(judge(&original, &status(NOT_FOUND)), Verdict::NotFound);

        let busy = TransactionStatusResponse {
            response: Response::failure(ErrorCondition::Busy, "busy"),
            message_reference: None,
            repeated_message_response: None,
        };
        assert!(matches!(judge(&original, &busy), Verdict::Failed(_)));
    }

    #[test]
    fn a_repeated_answer_for_another_payment_is_not_taken() {
        let mut original = payment();
        original.header.service_id = Some("0314099999".into());
        let Verdict::Inconsistent(m) = judge(&original, &status(STATUS)) else {
            panic!("another ServiceID must not be recovered");
        };
        assert_eq!(m[0].field, "ServiceID");

        let mut s = status(STATUS);
        s.repeated_message_response = None;
        assert!(matches!(judge(&payment(), &s), Verdict::Inconsistent(_)));
    }

    #[test]
    fn asks_with_backoff_while_in_progress_then_gives_up() {
        let mut r = Recovery::new(FAST);
        assert_eq!(r.start(), Step::Ask(Duration::ZERO));
        let in_progress = || Observation::Verdict(Verdict::InProgress);
        assert_eq!(r.observe(in_progress()), Step::Ask(Duration::from_secs(1)));
        assert_eq!(r.observe(in_progress()), Step::Ask(Duration::from_secs(2)));
        let Step::Unknown(why) = r.observe(in_progress()) else {
            panic!("three requests is the bound");
        };
        assert_eq!(
            why,
            "the terminal still reports it in progress (after 3 status requests)"
        );
        assert_eq!(r.asked(), 3);
    }

    #[test]
    fn stops_on_an_answer_a_not_found_or_a_fatal_failure() {
        let original = payment();
        let mut r = Recovery::new(FAST);
        r.start();
        let transient = Observation::Failure {
            reason: "timeout".into(),
            fatal: false,
        };
        assert_eq!(r.observe(transient), Step::Ask(Duration::from_secs(1)));
        let Verdict::Answer(answer) = judge(&original, &status(STATUS)) else {
            unreachable!()
        };
        assert_eq!(
            r.observe(Observation::Verdict(Verdict::Answer(answer.clone()))),
            Step::Recovered(answer)
        );

        let mut r = Recovery::new(FAST);
        r.start();
        assert_eq!(
            r.observe(Observation::Verdict(Verdict::NotFound)),
            Step::NotReceived
        );

        let mut r = Recovery::new(FAST);
        r.start();
        let fatal = Observation::Failure {
            reason: "certificate mismatch".into(),
            fatal: true,
        };
        assert_eq!(
            r.observe(fatal),
            Step::Unknown("certificate mismatch".into())
        );

        let mut r = Recovery::new(FAST);
        r.start();
        let Step::Unknown(why) = r.observe(Observation::Verdict(judge(&original, &{
            let mut s = status(STATUS);
            s.repeated_message_response
                .as_mut()
                .unwrap()
                .message_header
                .poi_id = "x".into();
            s
        }))) else {
            panic!("an inconsistent record ends the recovery");
        };
        assert!(why.contains("POIID"), "{why}");
    }

    #[test]
    fn a_failing_status_request_is_retried_within_the_bound() {
        let mut r = Recovery::new(FAST);
        r.start();
        let busy = Observation::Verdict(Verdict::Failed(Response::failure(
            ErrorCondition::Busy,
            "another request runs",
        )));
        assert_eq!(r.observe(busy.clone()), Step::Ask(Duration::from_secs(1)));
        assert_eq!(r.observe(busy.clone()), Step::Ask(Duration::from_secs(2)));
        let Step::Unknown(why) = r.observe(busy) else {
            panic!("bounded");
        };
        assert!(why.contains("Busy: another request runs"), "{why}");
    }
}
