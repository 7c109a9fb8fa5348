//! The model's input rows ([`model_input`]) and the ONNX scorer with its
//! execution provider ([`scorer`]).

pub(crate) mod model_input;
pub mod scorer;
