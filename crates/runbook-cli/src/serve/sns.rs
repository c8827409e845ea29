//! SNS message signatures: the string SNS signs, rebuilt from the message; the signing
//! certificate fetched only from an allowed host (https, or http on loopback for tests);
//! its RSA key checking the signature (SignatureVersion 1: SHA1, 2: SHA256).

use serde_json::Value;

/// Verify an SNS message (notification or subscription confirmation).
pub async fn verify(body: &[u8], cert_hosts: &[String]) -> Result<(), String> {
    let msg: Value =
        serde_json::from_slice(body).map_err(|_| "not an SNS message (not JSON)".to_string())?;
    let field = |k: &str| msg.get(k).and_then(Value::as_str);
    let cert_url = field("SigningCertURL")
        .or_else(|| field("SigningCertUrl"))
        .ok_or("unsigned: no SigningCertURL")?;
    if !host_allowed(cert_url, cert_hosts) || !cert_url.ends_with(".pem") {
        return Err(format!(
            "the signing certificate {cert_url} is not on an allowed host"
        ));
    }
    let signature = field("Signature")
        .and_then(super::config::base64_decode)
        .ok_or("no Signature")?;
    let alg: &dyn ring::signature::VerificationAlgorithm = match field("SignatureVersion") {
        Some("1") => &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        Some("2") => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        other => return Err(format!("unknown SignatureVersion {other:?}")),
    };
    let text = string_to_sign(&msg)?;
    let pem = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?
        .get(cert_url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("fetching the signing certificate: {e}"))?
        .text()
        .await
        .map_err(|e| format!("fetching the signing certificate: {e}"))?;
    let der = pem_body(&pem).ok_or("the signing certificate is not PEM")?;
    let key = rsa_public_key(&der).ok_or("the signing certificate has no RSA key")?;
    ring::signature::UnparsedPublicKey::new(alg, key)
        .verify(text.as_bytes(), &signature)
        .map_err(|_| "the signature does not match the message".to_string())
}

/// The canonical string SNS signs.
pub fn string_to_sign(msg: &Value) -> Result<String, String> {
    let ty = msg.get("Type").and_then(Value::as_str).unwrap_or("");
    let keys: &[&str] = match ty {
        "Notification" => &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ],
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ],
        other => return Err(format!("cannot verify an SNS message of type `{other}`")),
    };
    let mut out = String::new();
    for k in keys {
        match msg.get(*k).and_then(Value::as_str) {
            Some(v) => {
                out.push_str(k);
                out.push('\n');
                out.push_str(v);
                out.push('\n');
            }
            None if *k == "Subject" => {}
            None => return Err(format!("the message has no {k}")),
        }
    }
    Ok(out)
}

/// `https://HOST/...` with HOST matching an allowed pattern (`*` is one label), or
/// `http://` on a loopback host that is allowed.
pub fn host_allowed(url: &str, hosts: &[String]) -> bool {
    let (scheme, rest) = match url.split_once("://") {
        Some(x) => x,
        None => return false,
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            authority
        }
    });
    let loopback = host == "127.0.0.1" || host == "localhost" || host == "[::1]";
    let scheme_ok = scheme == "https" || (scheme == "http" && loopback);
    scheme_ok && hosts.iter().any(|p| host_matches(p, host))
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len()
        && p.iter()
            .zip(&h)
            .all(|(a, b)| *a == "*" || a.eq_ignore_ascii_case(b))
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    super::config::base64_decode(&pem[start..end])
}

/// One DER element: (tag, contents, rest).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (len, head) = if first & 0x80 == 0 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*der.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let body = der.get(head..head.checked_add(len)?)?;
    Some((tag, body, &der[head + len..]))
}

/// The RSAPublicKey inside a certificate's SubjectPublicKeyInfo.
pub fn rsa_public_key(cert: &[u8]) -> Option<Vec<u8>> {
    let (_, certificate, _) = tlv(cert)?;
    let (_, tbs, _) = tlv(certificate)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let (tag, _, r) = tlv(rest)?;
    rest = if tag == 0xa0 { tlv(r)?.2 } else { r };
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (_, spki, _) = tlv(rest)?;
    let (_, _alg, r) = tlv(spki)?;
    let (tag, bits, _) = tlv(r)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return None;
    }
    Some(bits[1..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_by_label_and_scheme() {
        let hosts = vec!["sns.*.amazonaws.com".to_string(), "127.0.0.1".to_string()];
        assert!(host_allowed(
            "https://sns.ap-northeast-1.amazonaws.com/SimpleNotificationService-x.pem",
            &hosts
        ));
        assert!(!host_allowed(
            "http://sns.ap-northeast-1.amazonaws.com/x.pem",
            &hosts
        ));
        assert!(!host_allowed("https://sns.evil.example.com/x.pem", &hosts));
        assert!(!host_allowed(
            "https://sns.x.amazonaws.com.evil.io/x.pem",
            &hosts
        ));
        assert!(!host_allowed(
            "https://user@sns.x.amazonaws.com/x.pem",
            &hosts
        ));
        assert!(host_allowed("http://127.0.0.1:8080/cert.pem", &hosts));
        assert!(!host_allowed("http://10.0.0.1/cert.pem", &hosts));
    }

    #[test]
    fn the_string_to_sign_leaves_out_a_missing_subject() {
        let msg = serde_json::json!({"Type": "Notification", "Message": "m", "MessageId": "1",
            "Timestamp": "t", "TopicArn": "arn"});
        assert_eq!(
            string_to_sign(&msg).unwrap(),
            "Message\nm\nMessageId\n1\nTimestamp\nt\nTopicArn\narn\nType\nNotification\n"
        );
    }

    #[test]
    fn der_garbage_is_rejected_not_a_panic() {
        assert!(rsa_public_key(&[]).is_none());
        assert!(rsa_public_key(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(rsa_public_key(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_none());
    }
}
