//! The ledger's invariants, checked from a store's audit data.

use std::fmt;

use crate::model::{AccountFlags, AccountId, Balances, TransferId};

/// Most violations a report lists: a badly damaged ledger could break an
/// invariant on every account, and the report must stay a bounded size.
pub const MAX_REPORTED_VIOLATIONS: usize = 100;

/// One account's stored balances next to the balances derived from its
/// transfers, as read by a store for [`InvariantReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AuditRow {
    pub id: AccountId,
    pub flags: AccountFlags,
    pub stored: Balances,
    pub derived: Balances,
}

/// A broken invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Stored balances differ from the sums of the account's transfers.
    #[error("account {account}: stored balances {stored:?} differ from derived {derived:?}")]
    BalanceMismatch {
        /// The account.
        account: AccountId,
        /// Balances as stored.
        stored: Balances,
        /// Balances as derived from transfers.
        derived: Balances,
    },
    /// An account flagged `debits_must_not_exceed_credits` has more debits
    /// than posted credits.
    #[error("account {account}: debits exceed credits {balances:?}")]
    DebitsExceedCredits {
        /// The account.
        account: AccountId,
        /// Its stored balances.
        balances: Balances,
    },
    /// An account flagged `credits_must_not_exceed_debits` has more credits
    /// than posted debits.
    #[error("account {account}: credits exceed debits {balances:?}")]
    CreditsExceedDebits {
        /// The account.
        account: AccountId,
        /// Its stored balances.
        balances: Balances,
    },
    /// Total posted debits differ from total posted credits.
    #[error("posted debits {debits} != posted credits {credits}")]
    PostedTotalsDiffer {
        /// Sum of all accounts' posted debits.
        debits: u128,
        /// Sum of all accounts' posted credits.
        credits: u128,
    },
    /// Total pending debits differ from total pending credits.
    #[error("pending debits {debits} != pending credits {credits}")]
    PendingTotalsDiffer {
        /// Sum of all accounts' pending debits.
        debits: u128,
        /// Sum of all accounts' pending credits.
        credits: u128,
    },
    /// A post or void does not match the pending transfer it resolves.
    #[error("transfer {resolution} resolving {pending}: {what}")]
    BadResolution {
        /// The pending transfer named.
        pending: TransferId,
        /// The post or void.
        resolution: TransferId,
        /// What does not match.
        what: &'static str,
    },
    /// Transfers linked to an original exceed its amount.
    #[error("transfer {original}: linked transfers total {linked} exceed its amount {amount}")]
    OverCompensated {
        /// The original transfer.
        original: TransferId,
        /// Its amount.
        amount: u64,
        /// Total of the transfers linked to it.
        linked: u128,
    },
}

/// Sums of the stored balances over all accounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sum of pending debits.
    pub debits_pending: u128,
    /// Sum of posted debits.
    pub debits_posted: u128,
    /// Sum of pending credits.
    pub credits_pending: u128,
    /// Sum of posted credits.
    pub credits_posted: u128,
}

/// Result of [`crate::LedgerRead::check_invariants`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvariantReport {
    /// Accounts checked.
    pub accounts: u64,
    /// Transfers the balances were derived from.
    pub transfers: u64,
    /// Totals of the stored balances.
    pub totals: Totals,
    /// Violations found, at most [`MAX_REPORTED_VIOLATIONS`].
    pub violations: Vec<Violation>,
    /// More violations were found than listed.
    pub truncated: bool,
}

/// The ledger's invariants do not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ledger invariants violated: {report}")]
pub struct InvariantError {
    /// The full report.
    pub report: InvariantReport,
}

impl InvariantReport {
    /// Builds the report from audit rows and the violations a store found in
    /// the transfers themselves.
    pub(crate) fn evaluate<E>(
        rows: impl IntoIterator<Item = Result<AuditRow, E>>,
        transfers: u64,
        transfer_violations: Vec<Violation>,
    ) -> Result<Self, E> {
        let mut report = InvariantReport {
            accounts: 0,
            transfers,
            totals: Totals::default(),
            violations: Vec::new(),
            truncated: false,
        };
        for row in rows {
            let row = row?;
            report.accounts += 1;
            let t = &mut report.totals;
            t.debits_pending += u128::from(row.stored.debits_pending);
            t.debits_posted += u128::from(row.stored.debits_posted);
            t.credits_pending += u128::from(row.stored.credits_pending);
            t.credits_posted += u128::from(row.stored.credits_posted);
            if row.stored != row.derived {
                report.push(Violation::BalanceMismatch {
                    account: row.id,
                    stored: row.stored,
                    derived: row.derived,
                });
            }
            let b = row.stored;
            if row.flags.debits_must_not_exceed_credits
                && u128::from(b.debits_pending) + u128::from(b.debits_posted)
                    > u128::from(b.credits_posted)
            {
                report.push(Violation::DebitsExceedCredits {
                    account: row.id,
                    balances: b,
                });
            }
            if row.flags.credits_must_not_exceed_debits
                && u128::from(b.credits_pending) + u128::from(b.credits_posted)
                    > u128::from(b.debits_posted)
            {
                report.push(Violation::CreditsExceedDebits {
                    account: row.id,
                    balances: b,
                });
            }
        }
        let t = report.totals;
        if t.debits_posted != t.credits_posted {
            report.push(Violation::PostedTotalsDiffer {
                debits: t.debits_posted,
                credits: t.credits_posted,
            });
        }
        if t.debits_pending != t.credits_pending {
            report.push(Violation::PendingTotalsDiffer {
                debits: t.debits_pending,
                credits: t.credits_pending,
            });
        }
        for v in transfer_violations {
            report.push(v);
        }
        Ok(report)
    }

    fn push(&mut self, violation: Violation) {
        if self.violations.len() < MAX_REPORTED_VIOLATIONS {
            self.violations.push(violation);
        } else {
            self.truncated = true;
        }
    }

    /// Whether every invariant holds.
    pub fn is_consistent(&self) -> bool {
        self.violations.is_empty() && !self.truncated
    }

    /// `Ok(self)` if every invariant holds, else the report as an error.
    pub fn into_result(self) -> Result<Self, InvariantError> {
        if self.is_consistent() {
            Ok(self)
        } else {
            Err(InvariantError { report: self })
        }
    }
}

impl fmt::Display for InvariantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} accounts, {} transfers, {} violations{}",
            self.accounts,
            self.transfers,
            self.violations.len(),
            if self.truncated { " (truncated)" } else { "" }
        )?;
        for v in &self.violations {
            write!(f, "; {v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        id: u128,
        stored: Balances,
        derived: Balances,
        flags: AccountFlags,
    ) -> Result<AuditRow, ()> {
        Ok(AuditRow {
            id: AccountId(id),
            flags,
            stored,
            derived,
        })
    }

    #[test]
    fn balanced_rows_pass_and_each_fault_is_named() {
        let a = Balances {
            debits_posted: 10,
            credits_pending: 5,
            ..Balances::default()
        };
        let b = Balances {
            credits_posted: 10,
            debits_pending: 5,
            ..Balances::default()
        };
        let flags = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        let ok = InvariantReport::evaluate(
            [row(1, a, a, AccountFlags::NONE), row(2, b, b, flags)],
            2,
            vec![],
        )
        .unwrap();
        assert!(ok.is_consistent(), "{ok}");
        assert_eq!(ok.totals.debits_posted, 10);

        let bad = InvariantReport::evaluate(
            [row(1, a, b, AccountFlags::NONE), row(2, a, a, flags)],
            2,
            vec![],
        )
        .unwrap();
        assert!(matches!(
            bad.violations[..],
            [
                Violation::BalanceMismatch { .. },
                Violation::DebitsExceedCredits { .. },
                Violation::PostedTotalsDiffer {
                    debits: 20,
                    credits: 0
                },
                Violation::PendingTotalsDiffer {
                    debits: 0,
                    credits: 10
                },
            ]
        ));
        assert!(bad.into_result().is_err());
    }

    #[test]
    fn report_is_bounded() {
        let a = Balances {
            debits_posted: 1,
            ..Balances::default()
        };
        let rows = (0..1_000).map(|i| row(i, a, Balances::default(), AccountFlags::NONE));
        let report = InvariantReport::evaluate(rows, 0, vec![]).unwrap();
        assert_eq!(report.violations.len(), MAX_REPORTED_VIOLATIONS);
        assert!(report.truncated);
    }
}
