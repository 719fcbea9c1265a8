//! Relayed data (RFC 8656 §11–12): ChannelData and Send indications from clients go to
//! peers in place; peer datagrams are framed in place as ChannelData or a Data indication.

use std::net::SocketAddr;
use std::ops::Range;

use super::permissions::canonical;
use super::{
    Destination, Now, PEER_HEADROOM, PEER_TAILROOM, Payload, RelayPorts, Server, Transmit,
};
use crate::proto::allocation::{AllocId, ClientKey, Transport};
use crate::proto::attr;
use crate::proto::channel;
use crate::proto::message::{self, Class, Message, MessageBuilder, method};

impl<P: RelayPorts> Server<P> {
    pub(super) fn handle_channel_data(
        &mut self,
        now: Now,
        client: ClientKey,
        data: &[u8],
    ) -> Option<Transmit> {
        let Ok((number, payload)) = channel::parse(data) else {
            self.stats.malformed += 1;
            return None;
        };
        let t = now.instant;
        // An allocation past its lifetime relays nothing, even before the tick removes it
        // (the kernel stops at that instant too).
        let Some((id, alloc)) = self.allocation_of(&client).filter(|(_, a)| a.expires > t) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let Some(ch) = alloc
            .channel_by_number(number)
            .filter(|c| c.expires > t && alloc.permission(c.peer.ip(), t).is_some())
        else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        let (peer, counter) = (ch.peer, ch.counter);
        self.stats.count_to_peer(counter, payload.len());
        Some(Transmit {
            destination: Destination::Peer { alloc: id, peer },
            payload: Payload::InPlace(channel::HEADER_LEN..channel::HEADER_LEN + payload.len()),
        })
    }

    pub(super) fn handle_send(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
    ) -> Option<Transmit> {
        let Some((id, alloc)) = self
            .allocation_of(&client)
            .filter(|(_, a)| a.expires > now.instant)
        else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let (Some(peer), Some(data)) = (msg.get(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
        else {
            self.stats.malformed += 1;
            return None;
        };
        let Ok(peer) = attr::decode_xor_address(peer, &msg.transaction_id) else {
            self.stats.malformed += 1;
            return None;
        };
        let peer = canonical(peer);
        let Some(counter) = self.permitted_counter(alloc, peer, now) else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        let start = data.as_ptr() as usize - msg.raw().as_ptr() as usize;
        self.stats.count_to_peer(counter, data.len());
        Some(Transmit {
            destination: Destination::Peer { alloc: id, peer },
            payload: Payload::InPlace(start..start + data.len()),
        })
    }

    /// Wraps a datagram a relay socket received from `peer` for its client. The payload
    /// must sit at `frame[PEER_HEADROOM..PEER_HEADROOM + len]` with [`PEER_TAILROOM`] bytes
    /// free after it; the answer is [`Payload::InPlace`] in `frame`. `None` when the peer
    /// has no permission (dropped).
    pub fn handle_peer(
        &mut self,
        now: Now,
        id: AllocId,
        peer: SocketAddr,
        frame: &mut [u8],
        len: usize,
    ) -> Option<Transmit> {
        let peer = canonical(peer);
        let alloc = self.allocation(id).filter(|a| a.expires > now.instant)?;
        let Some(counter) = self.permitted_counter(alloc, peer, now) else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        let client = alloc.client;
        let end = PEER_HEADROOM + len;
        if frame.len() < end + PEER_TAILROOM || len > u16::MAX as usize - 64 {
            self.stats.malformed += 1;
            return None;
        }
        let range = if let Some(ch) = alloc.channel_by_peer(peer, now.instant) {
            let start = PEER_HEADROOM - channel::HEADER_LEN;
            channel::write_header(&mut frame[start..PEER_HEADROOM], ch.number, len);
            // Stream transports need ChannelData padded to 4 bytes (RFC 8656 §12.5).
            let padded = if matches!(client.transport, Transport::Stream(_)) {
                let p = (len + 3) & !3;
                frame[end..PEER_HEADROOM + p].fill(0);
                PEER_HEADROOM + p
            } else {
                end
            };
            start..padded
        } else {
            self.data_indication(peer, frame, len)
        };
        self.stats.count_to_client(counter, len);
        Some(Transmit {
            destination: Destination::Client(client),
            payload: Payload::InPlace(range),
        })
    }

    /// Frames `frame[PEER_HEADROOM..][..len]` as a Data indication from `peer`, in place.
    fn data_indication(&mut self, peer: SocketAddr, frame: &mut [u8], len: usize) -> Range<usize> {
        let addr_len = attr::xor_address_len(&peer);
        let header_len = message::HEADER_LEN + 4 + addr_len + 4;
        let start = PEER_HEADROOM - header_len;
        self.indication_seq = self.indication_seq.wrapping_add(1);
        let mut tid = [0u8; 12];
        tid[4..].copy_from_slice(&self.indication_seq.to_be_bytes());
        let padded = (len + 3) & !3;
        let body_len = header_len - message::HEADER_LEN + padded;
        {
            let mut b = MessageBuilder::new(
                &mut frame[start..PEER_HEADROOM - 4],
                method::DATA,
                Class::Indication,
                &tid,
            );
            b.xor_address(attr::XOR_PEER_ADDRESS, peer);
        }
        frame[start + 2..start + 4].copy_from_slice(&(body_len as u16).to_be_bytes());
        let data_hdr = PEER_HEADROOM - 4;
        frame[data_hdr..data_hdr + 2].copy_from_slice(&attr::DATA.to_be_bytes());
        frame[data_hdr + 2..PEER_HEADROOM].copy_from_slice(&(len as u16).to_be_bytes());
        frame[PEER_HEADROOM + len..PEER_HEADROOM + padded].fill(0);
        start..PEER_HEADROOM + padded
    }
}
