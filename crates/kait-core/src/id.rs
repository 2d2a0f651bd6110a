//! Prefixed, time-sortable identifiers (`app_…`, `ep_…`, `msg_…`, `atmpt_…`).
//!
//! The body is a KSUID (4 bytes of seconds since 2014-05-13 plus 16 random bytes, base62,
//! 27 characters), the same shape Svix uses, so ids sort roughly by creation time and look
//! familiar to Svix client code. Ids are newtypes so that an endpoint id can never be passed
//! where a message id is expected.

use std::fmt;

use rand::RngCore;

/// KSUID epoch: 2014-05-13T16:53:20Z.
const KSUID_EPOCH_SECONDS: i64 = 1_400_000_000;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const KSUID_CHARS: usize = 27;

/// Returns a new KSUID string for the given Unix time in seconds.
pub fn ksuid_at(unix_seconds: i64) -> String {
    let mut out = String::with_capacity(KSUID_CHARS);
    push_ksuid(&mut out, unix_seconds);
    out
}

/// Appends a new KSUID for the given Unix time to `out` (an id's prefix is already there, so
/// the whole id is one allocation).
fn push_ksuid(out: &mut String, unix_seconds: i64) {
    let mut bytes = [0u8; 20];
    let since_epoch = (unix_seconds - KSUID_EPOCH_SECONDS).clamp(0, u32::MAX as i64) as u32;
    bytes[..4].copy_from_slice(&since_epoch.to_be_bytes());
    rand::rng().fill_bytes(&mut bytes[4..]);
    let digits = encode_base62(bytes);
    out.push_str(std::str::from_utf8(&digits).expect("base62 digits are ASCII"));
}

/// Base62-encodes a 160-bit big-endian number into exactly 27 characters.
///
/// Long division by 62 over five 32-bit limbs (with a 64-bit accumulator) rather than twenty
/// bytes: every message, delivery and attempt gets an id, and the byte-wise loop showed up in
/// the server's profile under load.
fn encode_base62(number: [u8; 20]) -> [u8; KSUID_CHARS] {
    let mut limbs = [0u32; 5];
    for (limb, chunk) in limbs.iter_mut().zip(number.chunks_exact(4)) {
        *limb = u32::from_be_bytes(chunk.try_into().expect("chunks of four"));
    }
    let mut out = [b'0'; KSUID_CHARS];
    let mut position = KSUID_CHARS;
    while limbs.iter().any(|&limb| limb != 0) && position > 0 {
        let mut remainder: u64 = 0;
        for limb in limbs.iter_mut() {
            let accumulator = (remainder << 32) | u64::from(*limb);
            *limb = (accumulator / 62) as u32;
            remainder = accumulator % 62;
        }
        position -= 1;
        out[position] = BASE62[remainder as usize];
    }
    out
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id stamped with the current time.
            pub fn generate() -> Self {
                let mut id = String::with_capacity($prefix.len() + KSUID_CHARS);
                id.push_str($prefix);
                push_ksuid(&mut id, chrono::Utc::now().timestamp());
                Self(id)
            }

            /// An id derived from `parts` (SHA-256, base 62): the same parts are the same id,
            /// so an action run again (a retried pipe run) names the same record.
            pub fn derived(parts: &[&str]) -> Self {
                use sha2::Digest as _;
                let mut hasher = sha2::Sha256::new();
                for part in parts {
                    hasher.update(part.as_bytes());
                    hasher.update([0]);
                }
                let digest = hasher.finalize();
                let mut number = [0u8; 20];
                number.copy_from_slice(&digest[..20]);
                let digits = encode_base62(number);
                Self(format!(
                    "{}{}",
                    $prefix,
                    std::str::from_utf8(&digits).expect("base62 digits are ASCII")
                ))
            }

            /// Wraps a string that is known to be an id of this kind (from the store).
            pub fn from_trusted(value: String) -> Self {
                Self(value)
            }

            /// Whether `value` has this id's prefix, so an API path segment can be told apart
            /// from a caller-chosen `uid`.
            pub fn has_prefix(value: &str) -> bool {
                value.starts_with($prefix)
            }

            /// `value` if it has the form of this kind of id (prefix, then a KSUID's
            /// base-62 characters): caller input checked before any lookup.
            pub fn parse(value: &str) -> Option<Self> {
                let rest = value.strip_prefix($prefix)?;
                (rest.len() == KSUID_CHARS && rest.bytes().all(|byte| byte.is_ascii_alphanumeric()))
                    .then(|| Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str(&self.0)
            }
        }
    };
}

/// Every id prefix: a caller's `uid` may start with none of them, so that a path segment is
/// never ambiguous between an id and a uid.
pub const ID_PREFIXES: [&str; 10] = [
    "app_", "ep_", "msg_", "atmpt_", "src_", "rcv_", "pipe_", "prun_", "att_", "mqr_",
];

prefixed_id!(
    /// An application (tenant / consumer).
    AppId,
    "app_"
);
prefixed_id!(
    /// A webhook endpoint of an application.
    EndpointId,
    "ep_"
);
prefixed_id!(
    /// A message (one event sent to one application).
    MessageId,
    "msg_"
);
prefixed_id!(
    /// One HTTP try of a delivery.
    AttemptId,
    "atmpt_"
);
prefixed_id!(
    /// An incoming source: a sender Kait receives webhooks from.
    SourceId,
    "src_"
);
prefixed_id!(
    /// One request received by an incoming source, as its log keeps it.
    ReceivedId,
    "rcv_"
);
prefixed_id!(
    /// A pipe: a rule that acts on an application's (or a source's) events.
    PipeId,
    "pipe_"
);
prefixed_id!(
    /// One run of a pipe (on an event, or when one of its timers fired).
    PipeRunId,
    "prun_"
);
prefixed_id!(
    /// A route from MQTT topics to events (issue 16).
    MqttRouteId,
    "mqr_"
);
prefixed_id!(
    /// A blob uploaded once (a snapshot, a clip) that messages reference: the claim check.
    AttachmentId,
    "att_"
);
prefixed_id!(
    /// A plugin registered with Kait (issue 17): a two-way integration with granted rights.
    PluginId,
    "plg_"
);
prefixed_id!(
    /// A plugin installed in one application, with the scopes granted there.
    InstallationId,
    "inst_"
);
prefixed_id!(
    /// A command sent to a device over MQTT, waiting for (or holding) its reply.
    DeviceCommandId,
    "cmd_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_valid_and_distinct() {
        let id = DeviceCommandId::derived(&["pipe_1", "msg_1", "actions[0]"]);
        assert_eq!(
            id,
            DeviceCommandId::derived(&["pipe_1", "msg_1", "actions[0]"])
        );
        assert_eq!(DeviceCommandId::parse(id.as_str()), Some(id.clone()));
        assert_ne!(
            id,
            DeviceCommandId::derived(&["pipe_1", "msg_1", "actions[1]"])
        );
        assert_ne!(
            DeviceCommandId::derived(&["ab", "c"]),
            DeviceCommandId::derived(&["a", "bc"])
        );
    }

    #[test]
    fn ids_have_prefix_and_ksuid_length() {
        let message_id = MessageId::generate();
        assert!(message_id.as_str().starts_with("msg_"));
        assert_eq!(message_id.as_str().len(), 4 + KSUID_CHARS);
        assert!(
            message_id.as_str()[4..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn only_well_formed_ids_parse() {
        let id = AttachmentId::generate();
        assert_eq!(AttachmentId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(AttachmentId::parse(&id.as_str()[..10]), None);
        assert_eq!(
            AttachmentId::parse(&id.as_str().replace("att_", "msg_")),
            None
        );
        assert_eq!(AttachmentId::parse(&format!("{id}x")), None);
        assert_eq!(
            AttachmentId::parse(&format!("att_{}/", &id.as_str()[5..])),
            None
        );
    }

    #[test]
    fn ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| EndpointId::generate()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn ksuid_sorts_by_time() {
        let earlier = ksuid_at(1_700_000_000);
        let later = ksuid_at(1_700_000_001);
        assert!(earlier < later, "{earlier} should sort before {later}");
    }

    fn base62(number: [u8; 20]) -> String {
        String::from_utf8(encode_base62(number).to_vec()).unwrap()
    }

    #[test]
    fn base62_of_known_values() {
        assert_eq!(base62([0; 20]), "0".repeat(27));
        let mut one = [0u8; 20];
        one[19] = 61;
        assert_eq!(base62(one), format!("{}z", "0".repeat(26)));
        let mut sixty_two = [0u8; 20];
        sixty_two[19] = 62;
        assert_eq!(base62(sixty_two), format!("{}10", "0".repeat(25)));
        // The largest KSUID, as published by the KSUID reference implementation.
        assert_eq!(base62([0xff; 20]), "aWgEPTl1tmebfsQzFP4bxwgy80V");
    }

    /// The limb-wise division agrees with the plain byte-wise one on random numbers.
    #[test]
    fn base62_matches_bytewise_long_division() {
        fn bytewise(mut number: [u8; 20]) -> String {
            let mut out = [b'0'; KSUID_CHARS];
            for position in (0..KSUID_CHARS).rev() {
                let mut remainder: u32 = 0;
                for byte in number.iter_mut() {
                    let accumulator = (remainder << 8) | u32::from(*byte);
                    *byte = (accumulator / 62) as u8;
                    remainder = accumulator % 62;
                }
                out[position] = BASE62[remainder as usize];
            }
            String::from_utf8(out.to_vec()).unwrap()
        }
        for _ in 0..10_000 {
            let mut number = [0u8; 20];
            rand::rng().fill_bytes(&mut number);
            assert_eq!(base62(number), bytewise(number), "{number:?}");
        }
    }
}
