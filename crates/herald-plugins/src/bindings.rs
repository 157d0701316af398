//! The host side of both `herald:formatter` worlds, generated: 0.1.0
//! (`wit/formatter.wit`) and 0.2.0 (`wit/formatter-0.2.0.wit`, 0.1.0 plus
//! `format-digest`). Each file is a package of its own, so each is named by path.

/// `herald:formatter@0.1.0`.
pub(crate) mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/formatter.wit",
        world: "plugin",
    });
}

/// `herald:formatter@0.2.0`.
pub(crate) mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit/formatter-0.2.0.wit",
        world: "plugin",
    });
}
