//! The wire format of `@socket.io/redis-emitter` 5.x (and of `socket.io-redis-adapter`
//! broadcasts, which share it): a msgpack array `[uid, packet, opts]` on the channel
//! `{key}#{nsp}#` or `{key}#{nsp}#{room}#`, and JSON requests on `{key}-request#{nsp}#`.
//!
//! Decoding is pure and total: any input gives a value or a [`FrameError`], never a panic, so
//! a misbehaving publisher costs one log line and one counted frame.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// Socket.IO packet types a broadcast may carry: EVENT, and BINARY_EVENT from publishers that
/// encode before publishing.
const EVENT: u8 = 2;
const BINARY_EVENT: u8 = 5;
/// How deeply values may nest. rmp-serde's own limit (1024) still overflows a 2 MiB thread
/// stack in debug builds; real payloads are far shallower.
const MAX_DEPTH: usize = 64;
/// msgpack's timestamp extension, which notepack.io uses for `Date`.
const TIMESTAMP_EXT: i8 = -1;

/// One argument of an event, as msgpack carried it. Binary stays binary: serialized through
/// socketioxide it becomes a Socket.IO binary attachment, as a Node server would send it.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    Array(Vec<Arg>),
    /// Key order is kept; msgpack maps from JavaScript objects always have string keys.
    Map(Vec<(String, Arg)>),
}

/// The arguments of an event. Serialized as a tuple, which socketioxide spreads into separate
/// Socket.IO arguments (`["event", a, b]`) instead of one array argument.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Args(pub Vec<Arg>);

/// An event to deliver to this node's sockets.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    pub event: String,
    pub args: Args,
    /// Empty means every socket of the namespace.
    pub rooms: Vec<String>,
    pub except: Vec<String>,
}

/// A cluster-wide operation on sockets (`socketsJoin`, `socketsLeave`, `disconnectSockets`).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub op: RequestOp,
    pub rooms: Vec<String>,
    pub except: Vec<String>,
}

/// What a [`Request`] does to the sockets it selects.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestOp {
    Join(Vec<String>),
    Leave(Vec<String>),
    /// `close` (drop the whole connection) is not distinguished: Switchboard has one namespace,
    /// so leaving it ends the client's session either way.
    Disconnect,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("not a [uid, packet, opts] msgpack frame: {0}")]
    Msgpack(#[from] rmp_serde::decode::Error),
    #[error("not a JSON request: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the packet's data does not start with an event name")]
    NoEventName,
}

#[derive(Deserialize)]
struct Frame(
    #[allow(dead_code)] de::IgnoredAny,
    Packet,
    #[serde(default)] Opts,
);

#[derive(Deserialize)]
struct Packet {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    data: Option<Vec<Arg>>,
    #[serde(default)]
    nsp: Option<String>,
}

#[derive(Deserialize, Default)]
struct Opts {
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    except: Option<Vec<String>>,
}

/// Decodes a broadcast frame. `Ok(None)` for frames that are valid but not for us: another
/// namespace (a room name may contain `#`, so the channel alone does not say), or a packet
/// that is not an event.
pub fn decode_broadcast(bytes: &[u8], namespace: &str) -> Result<Option<Broadcast>, FrameError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    let Frame(_, packet, opts) = Frame::deserialize(&mut de)?;
    if packet.nsp.as_deref().unwrap_or("/") != namespace
        || !matches!(packet.kind, EVENT | BINARY_EVENT)
    {
        return Ok(None);
    }
    let mut data = packet.data.unwrap_or_default().into_iter();
    let Some(Arg::Str(event)) = data.next() else {
        return Err(FrameError::NoEventName);
    };
    Ok(Some(Broadcast {
        event,
        args: Args(data.collect()),
        rooms: opts.rooms.unwrap_or_default(),
        except: opts.except.unwrap_or_default(),
    }))
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    opts: Opts,
    #[serde(default)]
    rooms: Vec<String>,
}

/// Decodes a request. `Ok(None)` for request types that are not socket operations
/// (`serverSideEmit`, and the fetch/ack requests Node servers exchange among themselves).
pub fn decode_request(bytes: &[u8]) -> Result<Option<Request>, FrameError> {
    let raw: RawRequest = serde_json::from_slice(bytes)?;
    let op = match raw.kind {
        2 => RequestOp::Join(raw.rooms),
        3 => RequestOp::Leave(raw.rooms),
        4 => RequestOp::Disconnect,
        _ => return Ok(None),
    };
    Ok(Some(Request {
        op,
        rooms: raw.opts.rooms.unwrap_or_default(),
        except: raw.opts.except.unwrap_or_default(),
    }))
}

impl Serialize for Arg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Arg::Null => s.serialize_unit(),
            Arg::Bool(b) => s.serialize_bool(*b),
            Arg::Int(i) => s.serialize_i64(*i),
            Arg::UInt(u) => s.serialize_u64(*u),
            Arg::Float(f) => s.serialize_f64(*f),
            Arg::Str(text) => s.serialize_str(text),
            Arg::Bin(bytes) => s.serialize_bytes(bytes),
            Arg::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Arg::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl Serialize for Args {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut tuple = s.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArgVisitor)
    }
}

struct ArgVisitor;

impl<'de> Visitor<'de> for ArgVisitor {
    type Value = Arg;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a msgpack value")
    }
    fn visit_unit<E>(self) -> Result<Arg, E> {
        Ok(Arg::Null)
    }
    fn visit_none<E>(self) -> Result<Arg, E> {
        Ok(Arg::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Arg, D::Error> {
        Arg::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Arg, E> {
        Ok(Arg::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Arg, E> {
        Ok(Arg::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Arg, E> {
        Ok(Arg::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Arg, E> {
        Ok(Arg::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Arg, E> {
        Ok(Arg::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Arg, E> {
        Ok(Arg::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Arg, E> {
        Ok(Arg::Bin(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Arg, E> {
        Ok(Arg::Bin(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Arg, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Arg::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Arg, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some((k, v)) = map.next_entry::<String, Arg>()? {
            entries.push((k, v));
        }
        Ok(Arg::Map(entries))
    }
    /// rmp-serde hands msgpack extensions over as a newtype of `(tag, bytes)`.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Arg, D::Error> {
        d.deserialize_any(ExtVisitor)
    }
}

struct ExtVisitor;

impl<'de> Visitor<'de> for ExtVisitor {
    type Value = Arg;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a msgpack timestamp")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Arg, A::Error> {
        let tag: i8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("extension without a tag"))?;
        let Blob(data) = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("extension without data"))?;
        if tag != TIMESTAMP_EXT {
            return Err(de::Error::custom(format!(
                "unsupported msgpack extension {tag}"
            )));
        }
        timestamp(&data)
            .map(Arg::Str)
            .ok_or_else(|| de::Error::custom("invalid msgpack timestamp"))
    }
}

/// A `Date` becomes the string `JSON.stringify` gives it, as it would through a Node server.
fn timestamp(data: &[u8]) -> Option<String> {
    let (secs, nanos) = match data.len() {
        4 => (i64::from(u32::from_be_bytes(data.try_into().ok()?)), 0),
        8 => {
            let v = u64::from_be_bytes(data.try_into().ok()?);
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(data[4..].try_into().ok()?),
            u32::from_be_bytes(data[..4].try_into().ok()?),
        ),
        _ => return None,
    };
    let at = chrono::DateTime::from_timestamp(secs, nanos)?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Bytes from msgpack `bin` or extension data.
struct Blob(Vec<u8>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BlobVisitor;
        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(v))
            }
        }
        d.deserialize_bytes(BlobVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames published by `@socket.io/redis-emitter` 5.x (notepack.io 3), captured with a
    /// fake Redis client that hex-dumps what `publish` gets.
    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const NS: &str = "/realtime";

    fn map(entries: &[(&str, Arg)]) -> Arg {
        Arg::Map(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn one_room_event() {
        // emitter.of("/realtime").to("user:42").emit("notification:new", { id: "n1", title: "Hi" })
        let frame = hex(
            "93a7656d697474657283a47479706502a46461746192b06e6f74696669636174696f6e3a6e657782a26964a26e31a57469746c65a24869a36e7370a92f7265616c74696d6583a5726f6f6d7391a7757365723a3432a5666c61677380a665786365707490",
        );
        let b = decode_broadcast(&frame, NS).unwrap().unwrap();
        assert_eq!(b.event, "notification:new");
        assert_eq!(
            b.args,
            Args(vec![map(&[
                ("id", Arg::Str("n1".into())),
                ("title", Arg::Str("Hi".into()))
            ])])
        );
        assert_eq!(b.rooms, vec!["user:42"]);
        assert!(b.except.is_empty());
        assert_eq!(
            serde_json::to_value(&b.args).unwrap(),
            serde_json::json!([{ "id": "n1", "title": "Hi" }])
        );
    }

    #[test]
    fn except_and_several_args() {
        // .to("chat:r1").except("user:7").emit("chat:new_message", { roomId: "r1", n: 1.5 }, 2, null)
        let frame = hex(
            "93a7656d697474657283a47479706502a46461746194b0636861743a6e65775f6d65737361676582a6726f6f6d4964a27231a16ecb3ff800000000000002c0a36e7370a92f7265616c74696d6583a5726f6f6d7391a7636861743a7231a5666c61677380a665786365707491a6757365723a37",
        );
        let b = decode_broadcast(&frame, NS).unwrap().unwrap();
        assert_eq!(b.event, "chat:new_message");
        assert_eq!(b.rooms, vec!["chat:r1"]);
        assert_eq!(b.except, vec!["user:7"]);
        assert_eq!(
            serde_json::to_value(&b.args).unwrap(),
            serde_json::json!([{ "roomId": "r1", "n": 1.5 }, 2, null])
        );
    }

    #[test]
    fn namespace_wide_event_without_args() {
        // emitter.of("/realtime").emit("ping")
        let frame = hex(
            "93a7656d697474657283a47479706502a46461746191a470696e67a36e7370a92f7265616c74696d6583a5726f6f6d7390a5666c61677380a665786365707490",
        );
        let b = decode_broadcast(&frame, NS).unwrap().unwrap();
        assert_eq!(b.event, "ping");
        assert_eq!(b.args, Args::default());
        assert!(b.rooms.is_empty());
    }

    #[test]
    fn binary_and_dates() {
        // .to(["a", "b"]).emit("bin", Buffer.from([1, 2, 3]), new Date(1700000000000), [true, -1])
        let frame = hex(
            "93a7656d697474657283a47479706502a46461746194a362696ec403010203d6ff6553f10092c3ffa36e7370a92f7265616c74696d6583a5726f6f6d7392a161a162a5666c61677380a665786365707490",
        );
        let b = decode_broadcast(&frame, NS).unwrap().unwrap();
        assert_eq!(b.rooms, vec!["a", "b"]);
        assert_eq!(
            b.args,
            Args(vec![
                Arg::Bin(vec![1, 2, 3]),
                Arg::Str("2023-11-14T22:13:20.000Z".into()),
                Arg::Array(vec![Arg::Bool(true), Arg::Int(-1)]),
            ])
        );
    }

    #[test]
    fn timestamps_of_every_width() {
        // 64-bit: 1.5 s after the epoch (500 ms in the nanosecond bits).
        let nanos: u64 = 500_000_000;
        let v = (nanos << 34) | 1;
        assert_eq!(
            timestamp(&v.to_be_bytes()).as_deref(),
            Some("1970-01-01T00:00:01.500Z")
        );
        // 96-bit: before the epoch.
        let mut data = 0u32.to_be_bytes().to_vec();
        data.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(
            timestamp(&data).as_deref(),
            Some("1969-12-31T23:59:59.000Z")
        );
        assert_eq!(timestamp(&[1, 2, 3]), None);
    }

    #[test]
    fn other_namespaces_are_not_ours() {
        // new Emitter(client).of("/other").emit("x", 1)
        let frame = hex(
            "93a7656d697474657283a47479706502a46461746192a17801a36e7370a62f6f7468657283a5726f6f6d7390a5666c61677380a665786365707490",
        );
        assert_eq!(decode_broadcast(&frame, NS).unwrap(), None);
    }

    #[test]
    fn volatile_flag_is_accepted() {
        // emitter.of("/realtime").volatile.to("user:1").emit("v", "x")
        let frame = hex(
            "93a7656d697474657283a47479706502a46461746192a176a178a36e7370a92f7265616c74696d6583a5726f6f6d7391a6757365723a31a5666c61677381a8766f6c6174696c65c3a665786365707490",
        );
        let b = decode_broadcast(&frame, NS).unwrap().unwrap();
        assert_eq!(b.event, "v");
        assert_eq!(b.rooms, vec!["user:1"]);
    }

    #[test]
    fn bad_frames_are_errors() {
        let full = hex(
            "93a7656d697474657283a47479706502a46461746191a470696e67a36e7370a92f7265616c74696d6583a5726f6f6d7390a5666c61677380a665786365707490",
        );
        for cut in 0..full.len() {
            assert!(
                decode_broadcast(&full[..cut], NS).is_err(),
                "prefix of {cut} bytes"
            );
        }
        assert!(decode_broadcast(b"{\"json\":true}", NS).is_err());
        // [uid, {type: 2, data: [1], nsp: "/realtime"}, {}]: no event name.
        let no_name = rmp_serde::to_vec(&(
            "x",
            serde_json::json!({ "type": 2, "data": [1], "nsp": NS }),
            serde_json::json!({}),
        ))
        .unwrap();
        assert!(matches!(
            decode_broadcast(&no_name, NS),
            Err(FrameError::NoEventName)
        ));
        // An unknown extension type.
        let mut ext = hex("93a17883a47479706502a46461746192a165d40500");
        ext.extend(hex("a36e7370a92f7265616c74696d6580"));
        assert!(decode_broadcast(&ext, NS).is_err());
        // Deep nesting is refused by the depth limit, not by the stack.
        let mut deep = vec![0x93, 0xa1, b'x', 0x83, 0xa4];
        deep.extend_from_slice(b"type");
        deep.push(0x02);
        deep.push(0xa4);
        deep.extend_from_slice(b"data");
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        assert!(decode_broadcast(&deep, NS).is_err());
    }

    #[test]
    fn requests() {
        let join = br#"{"type":2,"opts":{"rooms":["user:42"],"except":[]},"rooms":["room1"]}"#;
        assert_eq!(
            decode_request(join).unwrap(),
            Some(Request {
                op: RequestOp::Join(vec!["room1".into()]),
                rooms: vec!["user:42".into()],
                except: vec![],
            })
        );
        let leave =
            br#"{"type":3,"opts":{"rooms":["user:42"],"except":["user:1"]},"rooms":["room1"]}"#;
        assert_eq!(
            decode_request(leave).unwrap(),
            Some(Request {
                op: RequestOp::Leave(vec!["room1".into()]),
                rooms: vec!["user:42".into()],
                except: vec!["user:1".into()],
            })
        );
        let disconnect = br#"{"type":4,"opts":{"rooms":["user:42"],"except":[]},"close":true}"#;
        assert_eq!(
            decode_request(disconnect).unwrap().map(|r| r.op),
            Some(RequestOp::Disconnect)
        );
        let server_side = br#"{"uid":"emitter","type":6,"data":["hello",1]}"#;
        assert_eq!(decode_request(server_side).unwrap(), None);
        assert!(decode_request(b"\x93").is_err());
    }
}
