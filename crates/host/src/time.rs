//! Time of arrival, in the shapes ISO 8583 fields and limits need (UTC).

use time::OffsetDateTime;

/// One instant in the forms the host uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Now {
    /// Seconds since the Unix epoch.
    pub unix: i64,
    /// Start of the day, seconds since the epoch (daily limits).
    pub day_start: i64,
    /// Field 12, hhmmss.
    pub hhmmss: String,
    /// Field 13, MMDD.
    pub mmdd: String,
    /// YYMM, to compare with card expiry.
    pub yymm: String,
}

impl Now {
    /// The current time.
    pub fn system() -> Self {
        Self::at(OffsetDateTime::now_utc().unix_timestamp())
    }

    /// The instant `unix` seconds after the epoch.
    pub fn at(unix: i64) -> Self {
        let t = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Now {
            unix,
            day_start: unix
                - i64::from(t.hour()) * 3600
                - i64::from(t.minute()) * 60
                - i64::from(t.second()),
            hhmmss: format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second()),
            mmdd: format!("{:02}{:02}", u8::from(t.month()), t.day()),
            yymm: format!("{:02}{:02}", t.year() % 100, u8::from(t.month())),
        }
    }
}
