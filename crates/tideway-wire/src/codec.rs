//! Payload codecs. The transport treats payloads as opaque bytes and only carries the codec id;
//! the two ends use [`Codec`] to turn values into payloads and back.

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::error::CodecError;

/// How a payload is encoded. Its id travels in every Request and Response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Codec {
    /// JSON (UTF-8). The gateway forwards HTTP JSON bodies in this codec without re-encoding.
    #[default]
    Json = 1,
    /// MessagePack, with structs as maps (field names kept) so that arguments stay bindable by
    /// name whichever codec carried them.
    MsgPack = 2,
}

impl Codec {
    /// The codec for an id read off the wire, or `None` for an id this version does not know.
    pub fn from_id(id: u8) -> Option<Codec> {
        match id {
            1 => Some(Codec::Json),
            2 => Some(Codec::MsgPack),
            _ => None,
        }
    }

    /// The wire id of this codec.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// A short name (`json`, `msgpack`).
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MsgPack => "msgpack",
        }
    }

    /// Encodes a value as a payload.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes, CodecError> {
        match self {
            Codec::Json => {
                serde_json::to_vec(value)
                    .map(Bytes::from)
                    .map_err(|e| CodecError::Encode {
                        codec: self,
                        reason: e.to_string(),
                    })
            }
            Codec::MsgPack => rmp_serde::to_vec_named(value)
                .map(Bytes::from)
                .map_err(|e| CodecError::Encode {
                    codec: self,
                    reason: e.to_string(),
                }),
        }
    }

    /// Decodes a payload into a value.
    pub fn decode<T: DeserializeOwned>(self, payload: &[u8]) -> Result<T, CodecError> {
        match self {
            Codec::Json => serde_json::from_slice(payload).map_err(|e| CodecError::Decode {
                codec: self,
                reason: e.to_string(),
            }),
            Codec::MsgPack => rmp_serde::from_slice(payload).map_err(|e| CodecError::Decode {
                codec: self,
                reason: e.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Parcel {
        id: String,
        grams: u32,
        tags: Vec<String>,
    }

    #[test]
    fn both_codecs_round_trip_a_struct() {
        let p = Parcel {
            id: "WB1".into(),
            grams: 1200,
            tags: vec!["fragile".into()],
        };
        for codec in [Codec::Json, Codec::MsgPack] {
            let bytes = codec.encode(&p).unwrap();
            assert_eq!(codec.decode::<Parcel>(&bytes).unwrap(), p, "{codec}");
            assert_eq!(Codec::from_id(codec.id()), Some(codec));
        }
    }

    #[test]
    fn msgpack_keeps_field_names_so_arguments_bind_by_name() {
        let bytes = Codec::MsgPack
            .encode(&Parcel {
                id: "WB1".into(),
                grams: 1,
                tags: vec![],
            })
            .unwrap();
        // Decoding into a map proves the field names are on the wire.
        let map: std::collections::BTreeMap<String, serde_json::Value> =
            Codec::MsgPack.decode(&bytes).unwrap();
        assert!(map.contains_key("grams"));
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for codec in [Codec::Json, Codec::MsgPack] {
            let err = codec.decode::<Parcel>(&[0xc1, 0xff, 0x00]).unwrap_err();
            assert!(matches!(err, CodecError::Decode { .. }), "{err}");
        }
        assert_eq!(Codec::from_id(0), None);
        assert_eq!(Codec::from_id(3), None);
    }
}
