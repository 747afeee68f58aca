//! Legacy platform devices: the PL011 console UART.

pub mod pl011;

pub use pl011::Pl011;
