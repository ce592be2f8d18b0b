//! Child process of the cross-process transfer tests:
//! `tandem-transport-peer serve|read [--key value ...]` (see
//! `tandem_transport::testing::peer`).

use std::process::ExitCode;

use tandem_transport::testing::peer::{self, PeerOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = args.split_first() else {
        eprintln!("usage: tandem-transport-peer serve|read [--key value ...]");
        return ExitCode::from(2);
    };
    let opts = match PeerOptions::parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tandem-transport-peer: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match mode.as_str() {
        "serve" => peer::serve(&opts).map(|()| String::new()),
        "read" => peer::read(&opts).map(|bytes| format!("READ-OK {bytes}")),
        other => Err(format!("unknown mode {other}")),
    };
    match result {
        Ok(line) => {
            if !line.is_empty() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("READ-FAIL {e}");
            eprintln!("tandem-transport-peer {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}
