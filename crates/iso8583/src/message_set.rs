//! The financial message set of the `cup` dialect: which MTI, processing
//! code (3), condition code (25) and transaction type (60.1) each
//! transaction uses (docs/iso8583-dialect.md, "Message set"). Terminal and
//! host both read this one table.

/// A financial transaction type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnType {
    /// Balance inquiry.
    Balance,
    /// Purchase.
    Sale,
    /// Cancel a sale of the open batch.
    Void,
    /// Return money for an earlier sale.
    Refund,
    /// Hold an amount.
    PreAuth,
    /// Release a hold.
    PreAuthCancel,
    /// Charge (part of) a hold.
    Completion,
    /// Cancel a completion.
    CompletionVoid,
    /// A sale the terminal approved offline, sent later as an advice.
    OfflineSale,
}

/// The wire codes of one transaction type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codes {
    /// Request MTI.
    pub mti: &'static str,
    /// Field 3.
    pub processing_code: &'static str,
    /// Field 25.
    pub condition_code: &'static str,
    /// Field 60.1.
    pub type_code: u8,
}

impl TxnType {
    /// Every type.
    pub const ALL: [TxnType; 9] = [
        TxnType::Balance,
        TxnType::Sale,
        TxnType::Void,
        TxnType::Refund,
        TxnType::PreAuth,
        TxnType::PreAuthCancel,
        TxnType::Completion,
        TxnType::CompletionVoid,
        TxnType::OfflineSale,
    ];

    /// Its wire codes.
    pub const fn codes(self) -> Codes {
        let (mti, processing_code, condition_code, type_code) = match self {
            TxnType::Balance => ("0200", "310000", "00", 1),
            TxnType::Sale => ("0200", "000000", "00", 22),
            TxnType::Void => ("0200", "200000", "00", 23),
            TxnType::Refund => ("0220", "200000", "00", 25),
            TxnType::PreAuth => ("0100", "030000", "06", 10),
            TxnType::PreAuthCancel => ("0100", "200000", "06", 11),
            TxnType::Completion => ("0200", "000000", "06", 20),
            TxnType::CompletionVoid => ("0200", "200000", "06", 21),
            TxnType::OfflineSale => ("0220", "000000", "00", 30),
        };
        Codes {
            mti,
            processing_code,
            condition_code,
            type_code,
        }
    }

    /// The type a request of `mti` with processing code `processing_code`
    /// and 60.1 `type_code` is (the condition code is not needed to tell them apart).
    pub fn classify(mti: &str, processing_code: &str, type_code: u8) -> Option<TxnType> {
        Self::ALL.into_iter().find(|t| {
            let c = t.codes();
            c.mti == mti && c.processing_code == processing_code && c.type_code == type_code
        })
    }

    /// Whether an unknown outcome is reversed with a 0400 (advices and
    /// refunds are not; a balance inquiry's reversal is harmless).
    pub const fn reversible(self) -> bool {
        !matches!(self, TxnType::Refund | TxnType::OfflineSale)
    }
}

#[cfg(test)]
mod tests {
    use super::TxnType;

    #[test]
    fn every_type_classifies_back_to_itself() {
        for t in TxnType::ALL {
            let c = t.codes();
            assert_eq!(
                TxnType::classify(c.mti, c.processing_code, c.type_code),
                Some(t)
            );
        }
        assert_eq!(TxnType::classify("0200", "000000", 99), None);
    }
}
