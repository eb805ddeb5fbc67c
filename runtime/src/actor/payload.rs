//! The message and reply values of a [`TypedActor`](super::TypedActor): a typed value named by
//! its message type's stable wire name.
//!
//! In process a value stays a boxed Rust value (nothing is encoded). Sent to another node it is
//! encoded through [`crate::codec`] as `(name, body)`, where `body` is the codec's encoding of
//! the value; the receiving node decodes `body` only once it knows which message type the name
//! stands for.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::ActorError;

/// Encodes a boxed value of a known type through the codec.
type EncodeFn = fn(&(dyn Any + Send)) -> Result<Vec<u8>, String>;

fn encode_as<T: Serialize + 'static>(v: &(dyn Any + Send)) -> Result<Vec<u8>, String> {
    let v = v
        .downcast_ref::<T>()
        .ok_or_else(|| "payload holds another type than its name says".to_string())?;
    crate::codec::encode(v).map_err(|e| e.to_string())
}

/// A value that is either still a Rust value (in process) or encoded bytes (from another node).
enum Body {
    Value(Box<dyn Any + Send>, EncodeFn),
    Encoded(Vec<u8>),
}

/// A named, typed value; the common part of [`Request`] and [`Response`].
struct Named {
    name: Cow<'static, str>,
    body: Body,
}

impl Named {
    fn value<T: Serialize + Send + 'static>(name: &'static str, v: T) -> Self {
        Named {
            name: Cow::Borrowed(name),
            body: Body::Value(Box::new(v), encode_as::<T>),
        }
    }

    fn take<T: DeserializeOwned + 'static>(self) -> Result<T, ActorError> {
        let decode_error = |error: String| ActorError::Decode {
            message: self.name.to_string(),
            error,
        };
        match self.body {
            Body::Value(b, _) => b.downcast::<T>().map(|b| *b).map_err(|_| {
                decode_error(format!(
                    "holds another type than {}",
                    std::any::type_name::<T>()
                ))
            }),
            Body::Encoded(bytes) => {
                crate::codec::decode::<T>(&bytes).map_err(|e| decode_error(e.to_string()))
            }
        }
    }
}

impl Serialize for Named {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Cow<'_, [u8]> = match &self.body {
            Body::Value(v, encode) => {
                Cow::Owned(encode(v.as_ref()).map_err(serde::ser::Error::custom)?)
            }
            Body::Encoded(b) => Cow::Borrowed(b),
        };
        (self.name.as_ref(), bytes.as_ref()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Named {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, body) = <(String, Vec<u8>)>::deserialize(d)?;
        Ok(Named {
            name: Cow::Owned(name),
            body: Body::Encoded(body),
        })
    }
}

/// A message to a [`TypedActor`](super::TypedActor): any of its message types, named by
/// [`Message::NAME`](super::Message::NAME). Build one with [`Request::new`]; the actor's
/// dispatch turns it back into the message type.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct Request(Named);

impl Request {
    /// Wraps a message.
    pub fn new<M: super::Message>(msg: M) -> Self {
        Request(Named::value(M::NAME, msg))
    }

    /// The message type's wire name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The message, when it is of type `M` (decoding it if it came from another node).
    pub(crate) fn take<M: super::Message>(self) -> Result<M, ActorError> {
        self.0.take()
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Request({})", self.0.name)
    }
}

/// The reply of a [`TypedActor`](super::TypedActor) to a [`Request`]: the reply type of the
/// request's message type.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct Response(Named);

impl Response {
    /// Wraps the reply to message type `M`.
    pub fn new<M: super::Message>(reply: M::Reply) -> Self {
        Response(Named::value(M::NAME, reply))
    }

    /// The wire name of the message type this answers.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The reply, as the reply type of message type `M`.
    pub fn take<M: super::Message>(self) -> Result<M::Reply, ActorError> {
        if self.0.name != M::NAME {
            return Err(ActorError::Decode {
                message: M::NAME.to_string(),
                error: format!("the reply answers `{}`", self.0.name),
            });
        }
        self.0.take()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Response({})", self.0.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::Message;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Add(i64, i64);
    impl Message for Add {
        type Reply = i64;
        const NAME: &'static str = "test.add";
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Neg(i64);
    impl Message for Neg {
        type Reply = i64;
        const NAME: &'static str = "test.neg";
    }

    #[test]
    fn a_request_survives_the_codec_under_its_name() {
        let bytes = crate::codec::encode(&Request::new(Add(2, 3))).unwrap();
        let back: Request = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back.name(), "test.add");
        assert_eq!(back.take::<Add>().unwrap(), Add(2, 3));
    }

    #[test]
    fn a_local_request_is_taken_without_encoding() {
        assert_eq!(Request::new(Neg(4)).take::<Neg>().unwrap(), Neg(4));
        let e = Request::new(Neg(4)).take::<Add>().unwrap_err();
        assert!(matches!(e, ActorError::Decode { .. }), "{e:?}");
    }

    #[test]
    fn a_reply_is_checked_against_its_message_type() {
        let bytes = crate::codec::encode(&Response::new::<Add>(5)).unwrap();
        let back: Response = crate::codec::decode(&bytes).unwrap();
        let e = crate::codec::decode::<Response>(&bytes)
            .unwrap()
            .take::<Neg>()
            .unwrap_err();
        assert!(matches!(e, ActorError::Decode { ref message, .. } if message == "test.neg"));
        assert_eq!(back.take::<Add>().unwrap(), 5);
    }

    #[test]
    fn garbage_under_a_known_name_is_a_decode_error() {
        let bytes = crate::codec::encode(&("test.add", vec![0xffu8; 3])).unwrap();
        let req: Request = crate::codec::decode(&bytes).unwrap();
        let e = req.take::<Add>().unwrap_err();
        assert!(matches!(e, ActorError::Decode { .. }), "{e:?}");
    }
}
