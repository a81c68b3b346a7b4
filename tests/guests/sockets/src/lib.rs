//! Test guest that imports wasi:sockets (through `std::net`): the host must
//! refuse it before running anything.

use defops_guest::{Check, Fix, Result};

struct Sockets;

impl Fix for Sockets {
    fn check() -> Result<Check> {
        Ok(Check::applies("wants the network"))
    }

    fn apply() -> Result<String> {
        let stream = std::net::TcpStream::connect("127.0.0.1:9")?;
        Ok(format!("connected from {:?}", stream.local_addr()?))
    }
}

defops_guest::export_fix!(Sockets);
