//! The host side of the `herald:formatter@0.1.0` world (`wit/formatter.wit`), generated.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "plugin",
});
