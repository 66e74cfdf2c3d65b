//! The index layer, following `lib/xarray.c` and the lookup half of
//! `mm/filemap.c`: the radix tree of each file's pages and the
//! [`AddressSpace`](mapping::AddressSpace) that owns it, with the `find_*`
//! family and insertion into and removal from the page cache.
//!
//! May call: `mem`, `sync`, `stats`. Upward (docs/design.md, "Upward
//! calls"): inserting a page queues it for the LRU (`lru_cache_add`, as
//! `filemap_add_folio` does in the kernel), and a hit marks it accessed.

pub(crate) mod cleancache;
pub(crate) mod mapping;
// The tree's whole API is proven against a model in its own tests; the
// cache uses a subset.
#[allow(dead_code)]
pub(crate) mod xarray;
