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

/// Largest page of a room's lists (members, mutes, allow list, block list).
pub const LIST_PAGE_MAX: u32 = 1_000;

/// Checks a page request of a room's list: pages from 1, of 1 to `max` items (110
/// otherwise).
pub fn check_page(page_num: u32, page_size: u32, max: u32) -> Result<(), crate::ChatError> {
    if page_num == 0 || page_size == 0 || page_size > max {
        return Err(crate::ChatError::InvalidParam(format!(
            "pages are numbered from 1 and hold 1 to {max} items (asked page {page_num} of \
             {page_size})"
        )));
    }
    Ok(())
}

/// Checks the size of a cursor page: 1 to `max` items (110 otherwise).
pub fn check_page_size(page_size: u32, max: u32) -> Result<(), crate::ChatError> {
    if page_size == 0 || page_size > max {
        return Err(crate::ChatError::InvalidParam(format!(
            "the page size must be 1 to {max}, got {page_size}"
        )));
    }
    Ok(())
}

impl<T> ChatPageResult<T> {
    /// Page `page_num` (from 1) of `page_size` items of a listing of `total` items, taken from
    /// `items` in the listing's order. The caller checks the request with [`check_page`].
    pub fn from_iter(
        items: impl IntoIterator<Item = T>,
        total: usize,
        page_num: u32,
        page_size: u32,
    ) -> ChatPageResult<T> {
        let skip = (page_num.max(1) as usize - 1).saturating_mul(page_size as usize);
        ChatPageResult {
            data: items
                .into_iter()
                .skip(skip)
                .take(page_size as usize)
                .collect(),
            page_num,
            page_size,
            total,
        }
    }

    /// The number of items on this page (the SDK's `pageCount`).
    pub fn page_count(&self) -> usize {
        self.data.len()
    }

    /// True if pages after this one hold more items.
    pub fn has_more(&self) -> bool {
        (self.page_num as usize).saturating_mul(self.page_size as usize) < self.total
    }
}
