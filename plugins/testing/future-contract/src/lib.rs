//! A plugin built against a contract version the router does not accept
//! (`wit/plugin.wit` here says `switchyard:plugin@0.9.0`). Loading it must
//! fail with a message naming both versions; it exists only for that test.

wit_bindgen::generate!({ path: "wit", world: "processor" });

struct Future;

impl Guest for Future {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn handle(_ev: Event) -> Result<Vec<Output>, Failure> {
        Ok(Vec::new())
    }
}

export!(Future);
