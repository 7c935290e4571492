//! Page results, as the SDK's `ChatPageResult`.

use serde::{Deserialize, Serialize};

/// One page of a paged listing (the SDK's `ChatPageResult`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatPageResult<T> {
    /// The items of this page, in the listing's order.
    pub data: Vec<T>,
    /// The page number asked for, from 1.
    pub page_num: u32,
    /// The page size asked for.
    pub page_size: u32,
    /// How many items the whole listing holds (all pages).
    pub total: usize,
}

impl<T> ChatPageResult<T> {
    /// The number of items on this page (the SDK's `pageCount`).
    pub fn page_count(&self) -> usize {
        self.data.len()
    }

    /// True if pages after this one hold more items.
    pub fn has_more(&self) -> bool {
        (self.page_num as usize).saturating_mul(self.page_size as usize) < self.total
    }
}
