// Loads the flexim browser client. Everything else (the key, the connection, the
// encryption and the page) is Rust compiled to WebAssembly, in pkg/.
import init from "./pkg/flexim_web.js";

await init();
