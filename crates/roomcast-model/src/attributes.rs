//! Custom room attributes: key-value pairs, each owned by the member who set it.
//!
//! Agora's rules: at most 100 keys per room; a key is 1 to 128 characters of `[A-Za-z0-9_.-]`;
//! a value at most 4,096 characters; at most 10 pairs per set call and 10 keys per remove call.
//! A key belongs to whoever set it: without `overwrite` (or `force` for removal) a key owned by
//! someone else is left alone and reported as failed; with it, it is taken over. Keys set with
//! `delete_when_left` are removed when their owner leaves the room. Beyond Agora, every key has a
//! version (1 when created, +1 per change) for compare-and-set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{Audience, ChatRoomEvent, Outgoing};
use crate::room::{Effects, Room};
use crate::{ChatError, UserId};

/// Most keys a room may hold.
pub const MAX_KEYS_PER_ROOM: usize = 100;
/// Longest key, in characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest value, in characters.
pub const MAX_VALUE_CHARS: usize = 4096;
/// Most pairs per set call, and keys per remove call.
pub const MAX_KEYS_PER_CALL: usize = 10;

/// One stored attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAttribute {
    /// The value.
    pub value: String,
    /// Who set it last.
    pub owner: UserId,
    /// Removed when its owner leaves the room.
    pub delete_when_left: bool,
    /// 1 when created, +1 on every change.
    pub version: u64,
}

/// How to set attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SetAttributes {
    /// Key to value.
    pub attributes: BTreeMap<String, String>,
    /// Remove these keys when the setter leaves the room.
    pub delete_when_left: bool,
    /// Take over keys owned by other members.
    pub overwrite: bool,
    /// Compare-and-set: a key listed here is set only if its current version is the one given
    /// (0: only if the key does not exist yet).
    pub if_versions: BTreeMap<String, u64>,
}

impl SetAttributes {
    /// Sets `attributes`, as their owner, without taking over keys of others.
    pub fn new<K: Into<String>, V: Into<String>>(
        attributes: impl IntoIterator<Item = (K, V)>,
    ) -> SetAttributes {
        SetAttributes {
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ..SetAttributes::default()
        }
    }

    /// Removes the keys when the setter leaves the room.
    pub fn with_delete_when_left(mut self, yes: bool) -> Self {
        self.delete_when_left = yes;
        self
    }

    /// Takes over keys owned by other members.
    pub fn with_overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// Sets `key` only if its version is `version` (0: only if it does not exist). Adds to
    /// the conditions (one per key), so it is not a `with_` setter.
    pub fn if_version(mut self, key: impl Into<String>, version: u64) -> Self {
        self.if_versions.insert(key.into(), version);
        self
    }
}

/// The keys an attribute call could not apply, each with why; every key not in it was applied.
///
/// An attribute call returns `Ok` even when some keys fail (as the SDK's `failureKeys`), so this
/// is `#[must_use]`: look at it, or turn it into an error with
/// [`AttributeFailures::into_result`].
///
/// ```
/// # fn main() -> Result<(), roomcast_model::ChatError> {
/// # let failures = roomcast_model::AttributeFailures::default();
/// // failures = rooms.set_chat_room_attributes(&room, set).await?;
/// for (key, error) in failures.iter() {
///     eprintln!("{key} not set: {error} (code {})", error.code());
/// }
/// failures.into_result()?; // or fail on the first key that did not apply
/// # Ok(()) }
/// ```
#[must_use = "an attribute call returns Ok even when some keys failed: check the failures"]
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttributeFailures(BTreeMap<String, ChatError>);

impl AttributeFailures {
    /// True if every key was applied.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many keys failed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Why `key` failed, if it did.
    pub fn get(&self, key: &str) -> Option<&ChatError> {
        self.0.get(key)
    }

    /// The failed keys and their errors, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ChatError)> {
        self.0.iter().map(|(k, e)| (k.as_str(), e))
    }

    /// The failed keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// `Ok` if every key was applied, else the error of the first key that failed (in key
    /// order), with the key named in its message.
    pub fn into_result(self) -> Result<(), ChatError> {
        match self.0.into_iter().next() {
            None => Ok(()),
            Some((key, error)) => Err(error.with_context(&format!("attribute {key:?}"))),
        }
    }

    /// The failures as a map, key to error.
    pub fn into_map(self) -> BTreeMap<String, ChatError> {
        self.0
    }

    pub(crate) fn insert(&mut self, key: String, error: ChatError) {
        self.0.insert(key, error);
    }

    pub(crate) fn extend(&mut self, other: AttributeFailures) {
        self.0.extend(other.0);
    }
}

impl IntoIterator for AttributeFailures {
    type Item = (String, ChatError);
    type IntoIter = std::collections::btree_map::IntoIter<String, ChatError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl std::fmt::Display for AttributeFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "every key applied");
        }
        write!(f, "{} key(s) failed:", self.0.len())?;
        for (key, e) in &self.0 {
            write!(f, " {key:?}: {e} ({});", e.code())?;
        }
        Ok(())
    }
}

fn check_key(key: &str) -> Result<(), ChatError> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_KEY_CHARS {
        return Err(ChatError::InvalidParam(format!(
            "attribute key must be 1 to {MAX_KEY_CHARS} characters"
        )));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(ChatError::InvalidParam(
            "attribute keys may hold A-Z, a-z, 0-9, '_', '.', '-' only".into(),
        ));
    }
    Ok(())
}

impl Room {
    fn check_attribute_caller(&self, by: &UserId, count: usize) -> Result<(), ChatError> {
        if !self.is_member(by) {
            return Err(ChatError::NotJoined(by.to_string()));
        }
        if count == 0 || count > MAX_KEYS_PER_CALL {
            return Err(ChatError::InvalidParam(format!(
                "give 1 to {MAX_KEYS_PER_CALL} attributes per call, not {count}"
            )));
        }
        Ok(())
    }

    /// The attributes named by `keys` (all if empty), as key to value. Members only.
    pub fn attributes(
        &self,
        viewer: &UserId,
        keys: &[String],
    ) -> Result<BTreeMap<String, String>, ChatError> {
        if !self.is_member(viewer) {
            return Err(ChatError::NotJoined(viewer.to_string()));
        }
        let all = &self.record().attributes;
        Ok(if keys.is_empty() {
            all.iter()
                .map(|(k, a)| (k.clone(), a.value.clone()))
                .collect()
        } else {
            keys.iter()
                .filter_map(|k| all.get(k).map(|a| (k.clone(), a.value.clone())))
                .collect()
        })
    }

    pub(crate) fn set_attributes(
        &mut self,
        by: UserId,
        set: SetAttributes,
    ) -> Result<Effects, ChatError> {
        self.check_attribute_caller(&by, set.attributes.len())?;
        let mut failures = AttributeFailures::default();
        let mut updated = BTreeMap::new();
        for (key, value) in set.attributes {
            let outcome = check_key(&key).and_then(|()| {
                if value.chars().count() > MAX_VALUE_CHARS {
                    return Err(ChatError::InvalidParam(format!(
                        "attribute value is over {MAX_VALUE_CHARS} characters"
                    )));
                }
                let attrs = &self.record().attributes;
                let current = attrs.get(&key);
                if let Some(&expected) = set.if_versions.get(&key) {
                    let actual = current.map_or(0, |a| a.version);
                    if actual != expected {
                        return Err(ChatError::PermissionDenied(format!(
                            "version is {actual}, not {expected}"
                        )));
                    }
                }
                match current {
                    Some(a) if a.owner != by && !set.overwrite => Err(ChatError::PermissionDenied(
                        format!("the key belongs to {}", a.owner),
                    )),
                    None if attrs.len() >= MAX_KEYS_PER_ROOM => Err(ChatError::ExceedServiceLimit(
                        format!("a room holds at most {MAX_KEYS_PER_ROOM} attributes"),
                    )),
                    _ => Ok(current.map_or(1, |a| a.version + 1)),
                }
            });
            match outcome {
                Ok(version) => {
                    self.record_mut().attributes.insert(
                        key.clone(),
                        RoomAttribute {
                            value: value.clone(),
                            owner: by.clone(),
                            delete_when_left: set.delete_when_left,
                            version,
                        },
                    );
                    updated.insert(key, value);
                }
                Err(e) => {
                    failures.insert(key, e);
                }
            }
        }
        let mut fx = Effects {
            failures,
            ..Effects::default()
        };
        if !updated.is_empty() {
            fx.record_changed = true;
            fx.events.push(Outgoing {
                to: Audience::MembersExcept(vec![by.clone()]),
                event: ChatRoomEvent::AttributesUpdated {
                    room_id: self.id(),
                    attributes: updated,
                    from: by,
                },
            });
        }
        Ok(fx)
    }

    pub(crate) fn remove_attributes(
        &mut self,
        by: UserId,
        keys: Vec<String>,
        force: bool,
    ) -> Result<Effects, ChatError> {
        self.check_attribute_caller(&by, keys.len())?;
        let mut failures = AttributeFailures::default();
        let mut removed = Vec::new();
        for key in keys {
            // Removing a key that is not there succeeds and changes nothing (removals are
            // idempotent, as the lists'): no event names it.
            let outcome = check_key(&key).and_then(|()| match self.record().attributes.get(&key) {
                None => Ok(false),
                Some(a) if a.owner != by && !force => Err(ChatError::PermissionDenied(format!(
                    "the key belongs to {}",
                    a.owner
                ))),
                Some(_) => Ok(true),
            });
            match outcome {
                Ok(false) => {}
                Ok(true) => {
                    self.record_mut().attributes.remove(&key);
                    removed.push(key);
                }
                Err(e) => {
                    failures.insert(key, e);
                }
            }
        }
        let mut fx = Effects {
            failures,
            ..Effects::default()
        };
        if !removed.is_empty() {
            fx.record_changed = true;
            fx.events.push(Outgoing {
                to: Audience::MembersExcept(vec![by.clone()]),
                event: ChatRoomEvent::AttributesRemoved {
                    room_id: self.id(),
                    keys: removed,
                    from: by,
                },
            });
        }
        Ok(fx)
    }

    /// Removes `user`'s keys marked delete-when-left (it has just left); the event goes to the
    /// remaining members.
    pub(crate) fn drop_attributes_of(&mut self, user: &UserId) -> Effects {
        let keys: Vec<String> = self
            .record()
            .attributes
            .iter()
            .filter(|(_, a)| a.owner == *user && a.delete_when_left)
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            return Effects::default();
        }
        for k in &keys {
            self.record_mut().attributes.remove(k);
        }
        Effects {
            record_changed: true,
            events: vec![Outgoing {
                to: Audience::Members,
                event: ChatRoomEvent::AttributesRemoved {
                    room_id: self.id(),
                    keys,
                    from: user.clone(),
                },
            }],
            ..Effects::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{room_of, uid};
    use crate::{Command, Limits};

    fn room() -> Room {
        room_of("o", &["a", "b"], 100, &Limits::default())
    }

    fn set(r: &mut Room, by: &str, s: SetAttributes) -> Result<AttributeFailures, ChatError> {
        r.apply(Command::SetAttributes {
            by: uid(by),
            set: s,
        })
        .map(|fx| fx.failures)
    }

    fn codes(f: &AttributeFailures) -> BTreeMap<&str, u32> {
        f.iter().map(|(k, e)| (k, e.code())).collect()
    }

    #[test]
    fn ownership_and_overwrite() {
        let mut r = room();
        assert!(set(&mut r, "a", SetAttributes::new([("k", "1")]))
            .unwrap()
            .is_empty());
        let failed = set(&mut r, "b", SetAttributes::new([("k", "2"), ("j", "x")])).unwrap();
        assert_eq!(
            codes(&failed),
            BTreeMap::from([("k", 703)]),
            "j applied, k refused"
        );
        assert_eq!(r.record().attributes["k"].value, "1");
        let failed = set(
            &mut r,
            "b",
            SetAttributes::new([("k", "2")]).with_overwrite(true),
        )
        .unwrap();
        assert!(failed.is_empty());
        assert_eq!(r.record().attributes["k"].owner, uid("b"));
        assert_eq!(r.record().attributes["k"].version, 2);
        let rm = |r: &mut Room, by: &str, keys: &[&str], force| {
            r.apply(Command::RemoveAttributes {
                by: uid(by),
                keys: keys.iter().map(|k| k.to_string()).collect(),
                force,
            })
            .map(|fx| fx.failures)
        };
        assert_eq!(
            codes(&rm(&mut r, "a", &["k", "nope", "bad key!"], false).unwrap()),
            BTreeMap::from([("k", 703), ("bad key!", 110)]),
            "a key that is not there is removed already; a malformed one is 110"
        );
        let fx = r
            .apply(Command::RemoveAttributes {
                by: uid("a"),
                keys: vec!["nope".into()],
                force: false,
            })
            .unwrap();
        assert!(fx.failures.is_empty() && fx.events.is_empty() && !fx.record_changed);
        assert!(rm(&mut r, "a", &["k"], true).unwrap().is_empty());
        assert!(!r.record().attributes.contains_key("k"));
        assert_eq!(rm(&mut r, "x", &["j"], true).unwrap_err().code(), 702);
    }

    #[test]
    fn limits() {
        let mut r = room();
        let eleven: Vec<(String, String)> =
            (0..11).map(|n| (format!("k{n}"), "v".into())).collect();
        assert_eq!(
            set(&mut r, "a", SetAttributes::new(eleven))
                .unwrap_err()
                .code(),
            110
        );
        assert_eq!(
            set(&mut r, "a", SetAttributes::default())
                .unwrap_err()
                .code(),
            110
        );
        assert_eq!(
            set(&mut r, "x", SetAttributes::new([("k", "v")]))
                .unwrap_err()
                .code(),
            702
        );
        let bad = SetAttributes::new([
            ("ok-key_1.x", "v".repeat(MAX_VALUE_CHARS)),
            ("", "v".to_string()),
            ("bad key", "v".to_string()),
            ("k".repeat(129).as_str(), "v".to_string()),
            ("long", "v".repeat(MAX_VALUE_CHARS + 1)),
        ]);
        let failed = set(&mut r, "a", bad).unwrap();
        assert_eq!(
            codes(&failed),
            BTreeMap::from([
                ("", 110),
                ("bad key", 110),
                ("long", 110),
                ("k".repeat(129).as_str(), 110)
            ])
        );
        for batch in 0..10 {
            let pairs: Vec<(String, String)> = (0..10)
                .map(|n| (format!("b{batch}-{n}"), "v".into()))
                .collect();
            set(&mut r, "a", SetAttributes::new(pairs))
                .unwrap()
                .into_map();
        }
        assert_eq!(r.record().attributes.len(), MAX_KEYS_PER_ROOM);
        let failed = set(
            &mut r,
            "a",
            SetAttributes::new([("more", "v"), ("b0-0", "v2")]),
        )
        .unwrap();
        assert_eq!(
            codes(&failed),
            BTreeMap::from([("more", 4)]),
            "updates still apply when full"
        );
    }

    #[test]
    fn compare_and_set() {
        let mut r = room();
        assert!(set(
            &mut r,
            "a",
            SetAttributes::new([("k", "1")]).if_version("k", 0)
        )
        .unwrap()
        .is_empty());
        let failed = set(
            &mut r,
            "a",
            SetAttributes::new([("k", "2")]).if_version("k", 0),
        )
        .unwrap();
        assert_eq!(codes(&failed), BTreeMap::from([("k", 703)]));
        assert!(set(
            &mut r,
            "a",
            SetAttributes::new([("k", "2")]).if_version("k", 1)
        )
        .unwrap()
        .is_empty());
        assert_eq!(r.record().attributes["k"].value, "2");
    }

    #[test]
    fn keys_marked_delete_when_left_go_with_their_owner() {
        let mut r = room();
        set(
            &mut r,
            "a",
            SetAttributes::new([("temp", "1")]).with_delete_when_left(true),
        )
        .unwrap()
        .into_result()
        .unwrap();
        set(&mut r, "a", SetAttributes::new([("kept", "1")]))
            .unwrap()
            .into_result()
            .unwrap();
        let fx = r
            .apply(Command::Leave {
                user: uid("a"),
                owner_may_leave: true,
            })
            .unwrap();
        assert!(fx.record_changed);
        assert!(matches!(
            &fx.events[1].event,
            ChatRoomEvent::AttributesRemoved { keys, from, .. } if keys == &["temp"] && *from == uid("a")
        ));
        assert!(!r.record().attributes.contains_key("temp"));
        assert!(r.record().attributes.contains_key("kept"));
    }
}
