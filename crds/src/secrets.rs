//! The contract between the operator and the agent about Secrets that outputs name.
//!
//! A `LogCollectionConfig` names Secrets of its own namespace. The agent may not read Secrets
//! there, so the operator copies the keys an output uses into a mirror Secret in the install
//! namespace (labelled [`MIRROR_LABEL`], annotated with its source) and renders the mirror's name
//! into the NodeLogConfig. The agent reads only mirrors, and only the mirrors whose source
//! namespace is the collection's.

/// Label of every mirror Secret (value `"true"`); the agent watches only Secrets with it.
pub const MIRROR_LABEL: &str = "logging.tailor.dev/secret-mirror";
/// Annotation of a mirror: the namespace of the Secret it copies.
pub const SOURCE_NAMESPACE_ANNOTATION: &str = "logging.tailor.dev/source-namespace";
/// Annotation of a mirror: the name of the Secret it copies.
pub const SOURCE_NAME_ANNOTATION: &str = "logging.tailor.dev/source-name";
/// Label a Secret must carry (value `"true"`) before an output may use it: whoever may write a
/// LogCollectionConfig in a namespace could otherwise send any Secret of that namespace that has
/// `username`/`password` keys to an endpoint of their choice.
pub const ALLOW_LABEL: &str = "logging.tailor.dev/output-secret";

/// The keys of a Secret an output may use; no other key is copied or read.
pub const SECRET_KEYS: [&str; 6] = ["username", "password", "token", "ca.crt", "tls.crt", "tls.key"];

/// Whether `name` is a valid Kubernetes object name (DNS-1123 subdomain). Checked again by the
/// agent before it turns a name into a path under `--secrets-dir`.
pub fn is_object_name(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 253
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'.')
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names() {
        for ok in ["a", "es-creds", "tls.v2", "0"] {
            assert!(is_object_name(ok), "{ok}");
        }
        for bad in ["", "..", "../x", "a/b", "A", "-a", "a-", ".a", "a..b", &"a".repeat(254)] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }
}
