//! A tiny authoritative DNS server on loopback that answers from a [`Hosts`] table.
//!
//! Why not only the hosts file: ATS 9.2 reads `proxy.config.hostdb.host_file.path` from a
//! background task about a second after it starts serving, and a name looked up before that
//! goes to the system resolver and fails ("Unknown Host"), a failure HostDB then caches. It
//! also means test names would leak to the machine's real nameserver. Pointing
//! `proxy.config.dns.nameservers` at this server makes resolution deterministic from the
//! first request and keeps every query on loopback.
//!
//! It answers `A` and `AAAA` queries for names in the table, an empty `NOERROR` for the other
//! type of a known name, and `NXDOMAIN` for everything else. UDP only (ATS's default mode).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::net::{Hosts, runtime};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_FORMERR: u8 = 1;
const RCODE_NOTIMP: u8 = 4;
const TTL_S: u32 = 60;

/// A running DNS server. Dropping it stops it.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Starts a server for `hosts` on `127.0.0.1` and an ephemeral UDP port.
    pub fn start(hosts: Hosts) -> std::io::Result<Self> {
        let std_socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        std_socket.set_nonblocking(true)?;
        let addr = std_socket.local_addr()?;
        let socket = {
            let _guard = runtime().enter();
            tokio::net::UdpSocket::from_std(std_socket)?
        };
        let hosts = Arc::new(hosts);
        let task = runtime().spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(reply) = answer(&hosts, &buf[..n]) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Ok(Self { addr, task })
    }

    /// The `IP:PORT` it listens on (the value for `proxy.config.dns.nameservers`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds the reply to one query packet; `None` for packets not worth answering.
pub(crate) fn answer(hosts: &Hosts, query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None; // too short, or a response
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    let opcode = (query[2] >> 3) & 0x0f;
    let reply_header = |rcode: u8, ancount: u16, question_len: usize| {
        let mut r = Vec::with_capacity(512);
        r.extend_from_slice(&query[0..2]); // id
        // QR=1, opcode copied, AA=1, RD copied; RA=1, rcode.
        r.push(0x80 | (query[2] & 0x79) | 0x04);
        r.push(0x80 | rcode);
        r.extend_from_slice(&(u16::from(question_len > 0)).to_be_bytes());
        r.extend_from_slice(&ancount.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0]); // nscount, arcount
        r.extend_from_slice(&query[12..12 + question_len]);
        r
    };
    if opcode != 0 || qdcount != 1 {
        return Some(reply_header(RCODE_NOTIMP, 0, 0));
    }
    // The question: labels up to a zero byte, then QTYPE and QCLASS.
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return Some(reply_header(RCODE_FORMERR, 0, 0));
        }
        let label = query.get(pos + 1..pos + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let _qclass = query.get(pos + 2..pos + 4)?;
    let question_len = pos + 4 - 12;
    let name = labels.join(".");
    let Some(ip) = hosts.entry(&name) else {
        return Some(reply_header(RCODE_NXDOMAIN, 0, question_len));
    };
    let rdata: Option<Vec<u8>> = match (qtype, ip) {
        (TYPE_A, IpAddr::V4(v4)) => Some(v4.octets().to_vec()),
        (TYPE_AAAA, IpAddr::V6(v6)) => Some(v6.octets().to_vec()),
        _ => None,
    };
    let mut r = reply_header(0, u16::from(rdata.is_some()), question_len);
    if let Some(rdata) = rdata {
        r.extend_from_slice(&[0xc0, 0x0c]); // name: pointer to the question
        r.extend_from_slice(&qtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes()); // class IN
        r.extend_from_slice(&TTL_S.to_be_bytes());
        r.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
        r.extend_from_slice(&rdata);
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::loopback;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(u8::try_from(label.len()).expect("short label"));
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn answers_a_for_known_names() {
        let hosts = Hosts::new().with("www.example.test", loopback(5));
        let q = query("WWW.example.test", TYPE_A);
        let r = answer(&hosts, &q).expect("reply");
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[127, 0, 0, 5]);
        assert_eq!(&r[12..q.len()], &q[12..], "question echoed");
    }

    #[test]
    fn empty_noerror_for_aaaa_of_a_v4_name_and_nxdomain_for_unknown() {
        let hosts = Hosts::new().with("a.test", loopback(5));
        let r = answer(&hosts, &query("a.test", TYPE_AAAA)).expect("reply");
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
        let r = answer(&hosts, &query("b.test", TYPE_A)).expect("reply");
        assert_eq!(r[3] & 0x0f, RCODE_NXDOMAIN);
    }

    #[test]
    fn ignores_garbage_and_responses() {
        let hosts = Hosts::new();
        assert!(answer(&hosts, &[1, 2, 3]).is_none());
        let mut q = query("a.test", TYPE_A);
        q[2] |= 0x80;
        assert!(answer(&hosts, &q).is_none());
        let truncated = &query("a.test", TYPE_A)[..15];
        assert!(answer(&hosts, truncated).is_none());
    }

    #[test]
    fn serves_over_udp() {
        let server = DnsServer::start(Hosts::new().with("u.test", loopback(9))).expect("dns");
        let client = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        client
            .send_to(&query("u.test", TYPE_A), server.addr())
            .expect("send");
        let mut buf = [0u8; 512];
        let n = client.recv(&mut buf).expect("reply");
        assert_eq!(&buf[n - 4..n], &[127, 0, 0, 9]);
    }
}
