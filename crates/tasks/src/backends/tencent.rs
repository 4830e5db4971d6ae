//! `tencent`: Tencent Cloud CDN through its API 3.0 (`cdn.tencentcloudapi.com`, version
//! `2018-06-06`). For now this file holds the request signing, TC3-HMAC-SHA256
//! ([`tc3_authorization`]), pinned to Tencent's own worked example. The kind itself comes next
//! and will live here too: `PurgeUrlsCache` and `PurgePathCache` for refreshes, `PushUrlsCache`
//! for prefetches, both polled with `DescribePurgeTasks` / `DescribePushTasks` until done.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The signature algorithm's name, as it opens the string to sign and the `Authorization`.
const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// The headers signed, as in Tencent's worked example: `content-type` and `host` are the two
/// the API requires; the others (`X-TC-Action`, `X-TC-Timestamp`, ...) are sent unsigned.
const SIGNED_HEADERS: &str = "content-type;host";

/// A TC3 signature with the steps that led to it. The kind sends [`Self::authorization`]; the
/// intermediate values let tests compare each step with Tencent's example, and let a stand-in
/// API recompute a request's signature and say which step differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tc3Signature {
    /// The canonical request (method, path, query, headers, signed headers, payload hash).
    pub canonical_request: String,
    /// `TC3-HMAC-SHA256`, the timestamp, the credential scope and the canonical request's hash.
    pub string_to_sign: String,
    /// The lowercase hex HMAC-SHA256 of the string to sign with the derived key.
    pub signature: String,
    /// The `Authorization` header's value.
    pub authorization: String,
}

/// Signs an API 3.0 call: a `POST /` to `host` with `payload` (the JSON body) sent as
/// `content_type`, at `timestamp` (Unix seconds, the value sent as `X-TC-Timestamp`).
///
/// `content_type` must be byte for byte what is sent: Tencent recomputes the signature from the
/// header it receives, and some clients add `; charset=utf-8` on their own.
pub fn tc3_authorization(
    secret_id: &str,
    secret_key: &str,
    service: &str,
    host: &str,
    content_type: &str,
    payload: &[u8],
    timestamp: i64,
) -> Tc3Signature {
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{}\nhost:{}\n\n{SIGNED_HEADERS}\n{}",
        content_type.trim().to_ascii_lowercase(),
        host.trim().to_ascii_lowercase(),
        sha256_hex(payload),
    );
    // The date comes from the same timestamp, in UTC: a local date is a day ahead (or behind)
    // for part of every day, and Tencent then refuses the credential scope.
    let date = utc_date(timestamp);
    let credential_scope = format!("{date}/{service}/tc3_request");
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{credential_scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let secret_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let secret_service = hmac_sha256(&secret_date, service.as_bytes());
    let secret_signing = hmac_sha256(&secret_service, b"tc3_request");
    let signature = hex::encode(hmac_sha256(&secret_signing, string_to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={secret_id}/{credential_scope}, \
         SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
    );
    Tc3Signature {
        canonical_request,
        string_to_sign,
        signature,
        authorization,
    }
}

/// `YYYY-MM-DD` of a Unix timestamp in UTC (the proleptic Gregorian calendar; days from
/// 1970-01-01 to a civil date as in Howard Hinnant's `civil_from_days`).
fn utc_date(timestamp: i64) -> String {
    let days = timestamp.div_euclid(86_400);
    // Shift the epoch to 0000-03-01 so that a leap day is the last day of its year.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tencent Cloud API 3.0, "Signature v3", the worked example (DescribeInstances on cvm). The
    // SecretKey is the unmasked one of the English page; every expected value below is printed
    // in that page's steps 1 to 4.
    const SECRET_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    const SECRET_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    const TIMESTAMP: i64 = 1_551_113_065;
    const PAYLOAD: &str =
        r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;

    fn worked_example() -> Tc3Signature {
        tc3_authorization(
            SECRET_ID,
            SECRET_KEY,
            "cvm",
            "cvm.tencentcloudapi.com",
            "application/json; charset=utf-8",
            PAYLOAD.as_bytes(),
            TIMESTAMP,
        )
    }

    #[test]
    fn the_worked_example_payload_hash_and_canonical_request() {
        assert_eq!(
            sha256_hex(PAYLOAD.as_bytes()),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(
            worked_example().canonical_request,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\n\
             host:cvm.tencentcloudapi.com\n\ncontent-type;host\n\
             35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
    }

    #[test]
    fn the_worked_example_string_to_sign() {
        assert_eq!(
            worked_example().string_to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
    }

    #[test]
    fn the_worked_example_signature_and_authorization() {
        let signed = worked_example();
        assert_eq!(
            signed.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert_eq!(
            signed.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/\
             tc3_request, SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn the_date_is_the_utc_one_around_midnight() {
        // The example's own warning: 1551113065 is 2019-02-26 00:44:25 in UTC+8, but the
        // credential scope must say 2019-02-25.
        assert_eq!(utc_date(TIMESTAMP), "2019-02-25");
        assert_eq!(utc_date(1_551_139_199), "2019-02-25"); // 23:59:59 UTC
        assert_eq!(utc_date(1_551_139_200), "2019-02-26"); // 00:00:00 UTC
    }

    #[test]
    fn utc_dates_across_epochs_leap_days_and_year_ends() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_709_164_800), "2024-02-29");
        assert_eq!(utc_date(1_709_251_199), "2024-02-29");
        assert_eq!(utc_date(1_735_689_599), "2024-12-31");
        assert_eq!(utc_date(1_735_689_600), "2025-01-01");
        assert_eq!(utc_date(4_107_542_400), "2100-03-01");
    }

    #[test]
    fn the_cdn_service_goes_into_the_scope_and_changes_the_signature() {
        let cdn = tc3_authorization(
            SECRET_ID,
            SECRET_KEY,
            "cdn",
            "cdn.tencentcloudapi.com",
            "application/json",
            br#"{"Urls":["https://example.com/a.mp4"]}"#,
            TIMESTAMP,
        );
        assert!(cdn.authorization.contains(
            "Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cdn/tc3_request,"
        ));
        assert_ne!(cdn.signature, worked_example().signature);
    }
}
