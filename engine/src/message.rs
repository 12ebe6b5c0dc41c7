//! An application message as the broker routes it: immutable once published, shared by reference
//! count between every subscriber and every core that delivers it (fan-out never copies the
//! payload).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ringmq_codec::{Properties, Publish, QoS, Utf8Bytes};

/// Index of a core (executor) in the broker.
pub type CoreId = u16;

/// A session's identifier, unique on its home core for the life of the process.
pub type SessionId = u64;

/// Where a message was published: used for No Local.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Home core of the publishing session.
    pub core: CoreId,
    /// The publishing session, or 0 for messages the broker itself publishes ($SYS, wills of
    /// sessions that no longer exist).
    pub session: SessionId,
}

/// A published message.
#[derive(Debug)]
pub struct Message {
    /// Topic name (never empty: topic aliases are resolved before routing).
    pub topic: Utf8Bytes,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// MQTT 5 properties forwarded to subscribers (payload format, content type, response topic,
    /// correlation data, user properties); never topic alias, subscription identifiers or
    /// message expiry, which are per delivery.
    pub properties: Option<Box<Properties>>,
    /// When the message expires (MQTT 5 Message Expiry Interval), if ever.
    pub expires_at: Option<Instant>,
    /// Who published it.
    pub origin: Origin,
}

/// A message shared between subscribers and cores.
pub type SharedMessage = Arc<Message>;

impl Message {
    /// Builds the routed message from a decoded PUBLISH whose topic has been resolved.
    pub fn from_publish(
        publish: Publish,
        origin: Origin,
        now: Instant,
        expiry_max_secs: u32,
    ) -> Self {
        let Publish {
            topic,
            payload,
            qos,
            retain,
            properties,
            ..
        } = publish;
        let mut expires_at = None;
        let properties = properties.and_then(|mut p| {
            if let Some(secs) = p.message_expiry_interval.take() {
                let secs = if expiry_max_secs > 0 {
                    secs.min(expiry_max_secs)
                } else {
                    secs
                };
                expires_at = Some(now + std::time::Duration::from_secs(u64::from(secs)));
            }
            p.topic_alias = None;
            p.subscription_identifiers.clear();
            (!p.is_empty()).then_some(p)
        });
        if expires_at.is_none() && expiry_max_secs > 0 {
            expires_at = Some(now + std::time::Duration::from_secs(u64::from(expiry_max_secs)));
        }
        Self {
            topic,
            payload,
            qos,
            retain,
            properties,
            expires_at,
            origin,
        }
    }

    /// Seconds left before expiry (rounded up), `None` if it never expires, `Some(0)`... never:
    /// an expired message returns `Err(())`.
    pub fn remaining_expiry_secs(&self, now: Instant) -> Result<Option<u32>, Expired> {
        match self.expires_at {
            None => Ok(None),
            Some(at) if at <= now => Err(Expired),
            Some(at) => {
                let left = at - now;
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Ok(Some(secs.min(u64::from(u32::MAX)) as u32))
            }
        }
    }

    /// Bytes this message accounts for in a session queue.
    pub fn cost_bytes(&self) -> usize {
        self.topic.len() + self.payload.len() + 64
    }
}

/// The message has expired and must not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expiry_is_taken_from_the_properties_and_counts_down() {
        let now = Instant::now();
        let publish = Publish {
            topic: Utf8Bytes::from_static("a"),
            properties: Some(Box::new(Properties {
                message_expiry_interval: Some(10),
                topic_alias: Some(3),
                ..Default::default()
            })),
            ..Default::default()
        };
        let m = Message::from_publish(
            publish,
            Origin {
                core: 0,
                session: 1,
            },
            now,
            0,
        );
        assert!(m.properties.is_none(), "alias and expiry are per delivery");
        assert_eq!(m.remaining_expiry_secs(now), Ok(Some(10)));
        assert_eq!(
            m.remaining_expiry_secs(now + Duration::from_millis(9_500)),
            Ok(Some(1))
        );
        assert_eq!(
            m.remaining_expiry_secs(now + Duration::from_secs(10)),
            Err(Expired)
        );
    }
}
