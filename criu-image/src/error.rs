//! The one error type of the crate: what is wrong with bytes it was asked to decode (a pagemap
//! or mm image, or a protobuf message of CRIU's RPC). Decoding never touches a file, so no variant
//! carries a path: the caller knows which file or message it handed over.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a protobuf varint runs past the end")]
    VarintPastEnd,
    #[error("a protobuf varint longer than 10 bytes")]
    VarintTooLong,
    #[error("a protobuf field of {len} bytes runs past the end")]
    FieldPastEnd { len: u64 },
    #[error("protobuf wire type {0} is not supported")]
    WireType(u64),
    #[error("bad pagemap image: shorter than its two magics")]
    PagemapTruncatedMagic,
    #[error("bad pagemap image: magics {0:#x} {1:#x} are not a pagemap's")]
    NotPagemap(u32, u32),
    #[error("bad pagemap image: a record's length runs past the end")]
    RecordLengthPastEnd,
    #[error("bad pagemap image: a record of {len} bytes runs past the end")]
    RecordPastEnd { len: usize },
    #[error("bad pagemap image: no pagemap_head")]
    PagemapNoHead,
    #[error("bad pagemap image: its pagemap_head has no pages_id")]
    PagemapNoPagesId,
    #[error("bad pagemap image: a pagemap_entry has no vaddr")]
    PagemapEntryNoVaddr,
    #[error("bad pagemap image: field {0} is not a varint")]
    PagemapNotVarint(u64),
    #[error("bad mm image: shorter than its magics and record")]
    MmTruncated,
    #[error("bad mm image: magics {0:#x} {1:#x} are not an mm image's")]
    NotMm(u32, u32),
    #[error("bad mm image: a mapping from {0:#x} to {1:#x}")]
    MmBadVma(u64, u64),
}
