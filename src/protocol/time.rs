use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A wall-clock instant in milliseconds since the Unix epoch, written as RFC 3339 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timestamp(pub u64);

impl Timestamp {
    /// Now, by the system clock.
    pub(crate) fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp(ms)
    }
}

impl Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` as ASCII bytes. Written digit by digit: this
    /// runs twice per send, and `core::fmt` padding cost more than the rest of
    /// storing a message. The civil date comes from Howard Hinnant's
    /// days-from-civil inverse (years 0 to 9999 here).
    pub(crate) fn rfc3339(self) -> [u8; 24] {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
        // `days` is below 2^64 / 86,400, so it is a positive i64.
        let z = days.cast_signed() + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(0, 9999).cast_unsigned();
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u64| {
            for slot in out[at..at + width].iter_mut().rev() {
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        // Month 1 to 12 and day 1 to 31 by construction.
        put(5, 2, month.cast_unsigned());
        put(8, 2, day.cast_unsigned());
        put(11, 2, hour);
        put(14, 2, minute);
        put(17, 2, second);
        put(20, 3, ms);
        out
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.rfc3339();
        f.write_str(std::str::from_utf8(&text).expect("ASCII digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn formats_rfc3339_utc_millis() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(951_782_400_123).to_string(), "2000-02-29T00:00:00.123Z");
        assert_eq!(Timestamp(1_795_228_500_007).to_string(), "2026-11-21T02:35:00.007Z");
        assert_eq!(Timestamp(4_102_444_799_999).to_string(), "2099-12-31T23:59:59.999Z");
    }
}
