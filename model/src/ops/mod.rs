//! burn backend extension for quantized linear layers: the weights stay as raw GGUF blocks and
//! the product runs on edgeray's CPU kernels (`crate::quant`), called from burn through
//! `#[backend_extension(Flex)]`.

mod attention;
mod qlinear;
mod qweight;

pub use attention::{FlashAttnBackend, FlashAttnParams};
pub use qlinear::{QLinear, QuantLinearBackend};
pub use qweight::QuantWeight;
