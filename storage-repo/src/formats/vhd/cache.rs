//! A bounded cache of sector bitmaps, sharded so that readers of different blocks do not wait on one lock.
//!
//! Entries of the writable leaf can be dirty (changed in memory, not yet written); dirty entries are never
//! evicted, and the chain flushes before too many pile up. Clean entries are evicted arbitrarily when a shard is
//! full.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use super::bitmap::SectorBitmap;

const SHARDS: usize = 16;

struct Entry {
    bits: Box<SectorBitmap>,
    dirty: bool,
}

pub(crate) struct BitmapCache {
    shards: Box<[Mutex<HashMap<u32, Entry>>]>,
    per_shard: usize,
}

impl fmt::Debug for BitmapCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitmapCache").field("capacity", &(self.per_shard * SHARDS)).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BitmapCache {
    /// A cache of about `capacity` bitmaps (512 bytes each).
    pub fn new(capacity: usize) -> BitmapCache {
        let per_shard = capacity.div_ceil(SHARDS).max(4);
        BitmapCache { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), per_shard }
    }

    fn shard(&self, block: u32) -> &Mutex<HashMap<u32, Entry>> {
        &self.shards[block as usize % SHARDS]
    }

    /// Copies the cached bitmap of `block` into `out`; false if it is not cached.
    pub fn get(&self, block: u32, out: &mut SectorBitmap) -> bool {
        match lock(self.shard(block)).get(&block) {
            Some(e) => {
                out.copy_from_slice(&e.bits[..]);
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, block: u32) -> bool {
        lock(self.shard(block)).contains_key(&block)
    }

    fn make_room(&self, map: &mut HashMap<u32, Entry>) {
        if map.len() >= self.per_shard
            && let Some(victim) = map.iter().find(|(_, e)| !e.dirty).map(|(&k, _)| k)
        {
            map.remove(&victim);
        }
    }

    /// Caches `bits` for `block` unless an entry is already there.
    pub fn insert(&self, block: u32, bits: &SectorBitmap) {
        let mut map = lock(self.shard(block));
        if !map.contains_key(&block) {
            self.make_room(&mut map);
            map.insert(block, Entry { bits: Box::new(*bits), dirty: false });
        }
    }

    /// Runs `f` on the bitmap of `block`, inserting `loaded` first if it is not cached. `f` returns whether it
    /// changed the bits; a changed entry becomes dirty. Returns (`f`'s result, whether the entry just became dirty,
    /// whether the bitmap is now all ones over `bits`).
    pub fn update(
        &self,
        block: u32,
        loaded: Option<&SectorBitmap>,
        f: impl FnOnce(&mut SectorBitmap) -> bool,
        bits: usize,
    ) -> Option<(bool, bool, bool)> {
        let mut map = lock(self.shard(block));
        if !map.contains_key(&block) {
            let l = loaded?;
            self.make_room(&mut map);
            map.insert(block, Entry { bits: Box::new(*l), dirty: false });
        }
        let e = map.get_mut(&block)?;
        let changed = f(&mut e.bits);
        let newly_dirty = changed && !e.dirty;
        e.dirty |= changed;
        let full = super::bitmap::all_set(&e.bits[..], bits);
        Some((changed, newly_dirty, full))
    }

    /// Writes every dirty entry with `write` (under its shard's lock, so no reader can reload a stale copy in
    /// between) and marks it clean. Returns how many were written.
    pub fn write_dirty(
        &self,
        mut write: impl FnMut(u32, &SectorBitmap) -> std::io::Result<()>,
    ) -> std::io::Result<usize> {
        let mut n = 0;
        for s in self.shards.iter() {
            let mut map = lock(s);
            for (&block, e) in map.iter_mut().filter(|(_, e)| e.dirty) {
                write(block, &e.bits)?;
                e.dirty = false;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_dirty_entries_stay() {
        let c = BitmapCache::new(64);
        let bits = [0u8; 512];
        // Make every entry of shard 0 dirty, then overfill it: the dirty ones stay.
        for b in (0..8).map(|i| i * SHARDS as u32) {
            c.update(b, Some(&bits), |m| super::super::bitmap::set_range(m, 0, 1), 4096).unwrap();
        }
        for b in (8..100).map(|i| i * SHARDS as u32) {
            c.insert(b, &bits);
        }
        for b in (0..8).map(|i| i * SHARDS as u32) {
            assert!(c.contains(b));
        }
        assert!(lock(c.shard(0)).len() <= 9);
        let mut seen = 0;
        assert_eq!(
            c.write_dirty(|_, m| {
                seen += usize::from(m[0] == 0x80);
                Ok(())
            })
            .unwrap(),
            8
        );
        assert_eq!(seen, 8);
        assert_eq!(c.write_dirty(|_, _| Ok(())).unwrap(), 0);
    }

    #[test]
    fn update_reports_fullness() {
        let c = BitmapCache::new(16);
        let (changed, dirty, full) =
            c.update(7, Some(&[0u8; 512]), |m| super::super::bitmap::set_range(m, 0, 4096), 4096).unwrap();
        assert!(changed && dirty && full);
        assert!(c.update(8, None, |_| false, 4096).is_none());
    }
}
