//! A small UTC `strftime` for the `strftime_now(fmt)` global that some chat templates call
//! (e.g. Llama 3's `strftime_now("%d %b %Y")`).

/// A format string with an unsupported directive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("strftime: unsupported directive %{0}")]
pub struct StrftimeError(pub char);

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats `unix_secs` (UTC) with the directives `%Y %y %m %d %e %B %b %A %a %H %M %S %j %%`.
pub fn format_utc(unix_secs: i64, fmt: &str) -> Result<String, StrftimeError> {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let doy = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(k) = chars.next() else {
            return Err(StrftimeError('%'));
        };
        match k {
            'Y' => out.push_str(&y.to_string()),
            'y' => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            'm' => out.push_str(&format!("{m:02}")),
            'd' => out.push_str(&format!("{d:02}")),
            'e' => out.push_str(&format!("{d:>2}")),
            'B' => out.push_str(MONTHS[m as usize - 1]),
            'b' => out.push_str(&MONTHS[m as usize - 1][..3]),
            'A' => out.push_str(DAYS[weekday]),
            'a' => out.push_str(&DAYS[weekday][..3]),
            'H' => out.push_str(&format!("{:02}", secs / 3600)),
            'M' => out.push_str(&format!("{:02}", secs / 60 % 60)),
            'S' => out.push_str(&format!("{:02}", secs % 60)),
            'j' => out.push_str(&format!("{doy:03}")),
            '%' => out.push('%'),
            other => return Err(StrftimeError(other)),
        }
    }
    Ok(out)
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(
            format_utc(0, "%Y-%m-%d %H:%M:%S %A %j").unwrap(),
            "1970-01-01 00:00:00 Thursday 001"
        );
        // 2024-02-29T13:45:07Z
        assert_eq!(
            format_utc(1_709_214_307, "%d %b %Y %H:%M:%S %a %y").unwrap(),
            "29 Feb 2024 13:45:07 Thu 24"
        );
        // 2026-11-24 (a Tuesday), day 328 of the year
        assert_eq!(
            format_utc(1_795_478_400, "%e %B %Y, %A, %j, 100%%").unwrap(),
            "24 November 2026, Tuesday, 328, 100%"
        );
    }

    #[test]
    fn round_trip_days() {
        for days in [-800_000i64, -1, 0, 59, 365, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn unsupported_directive_is_an_error() {
        assert_eq!(format_utc(0, "%Q").unwrap_err(), StrftimeError('Q'));
        assert_eq!(format_utc(0, "abc%").unwrap_err(), StrftimeError('%'));
    }
}
