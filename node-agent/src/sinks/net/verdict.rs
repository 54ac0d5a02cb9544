//! What to do with a response status: the decision every HTTP-based sink shares.

/// The fate of a request (or of one item of a bulk request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Transient: send again after a back-off.
    Retry,
    /// The body is too large: send it again in smaller parts.
    Split,
    /// The destination refuses it for good: dead-letter it.
    Reject,
}

/// Classifies an HTTP status. 408 (timeout), 429 (too many requests) and 5xx are transient;
/// 413 asks for smaller requests. 401/403/404 are the destination's or the credentials'
/// configuration (a rotated secret, an index template not there yet): fixing it is the way out,
/// so they hold the data back (back-pressure) instead of throwing it away. Any other 4xx means
/// the request itself is wrong and will never be accepted.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        401 | 403 | 404 | 408 | 429 => Verdict::Retry,
        413 => Verdict::Split,
        500..=599 => Verdict::Retry,
        // 1xx/3xx are not final answers for a POST we sent without following redirects.
        100..=199 | 300..=399 => Verdict::Retry,
        _ => Verdict::Reject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(classify_status(200), Verdict::Delivered);
        assert_eq!(classify_status(204), Verdict::Delivered);
        assert_eq!(classify_status(429), Verdict::Retry);
        assert_eq!(classify_status(503), Verdict::Retry);
        assert_eq!(classify_status(408), Verdict::Retry);
        assert_eq!(classify_status(413), Verdict::Split);
        assert_eq!(classify_status(400), Verdict::Reject);
        assert_eq!(classify_status(401), Verdict::Retry);
        assert_eq!(classify_status(422), Verdict::Reject);
    }
}
