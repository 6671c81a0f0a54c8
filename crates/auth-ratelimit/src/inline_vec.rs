//! A list that lives on the stack up to `N` items, so the usual request (a
//! handful of rules) allocates nothing.

/// How many rules' worth of state a request keeps on the stack.
pub(crate) const RULES_INLINE: usize = 4;

#[derive(Clone, Debug)]
pub(crate) struct InlineVec<T: Copy, const N: usize> {
    inline: [Option<T>; N],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy, const N: usize> Default for InlineVec<T, N> {
    fn default() -> Self {
        Self {
            inline: [None; N],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl<T: Copy, const N: usize> InlineVec<T, N> {
    pub(crate) fn push(&mut self, item: T) {
        if self.len < N {
            self.inline[self.len] = Some(item);
        } else {
            self.spill.push(item);
        }
        self.len += 1;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + Clone + '_ {
        self.inline.iter().flatten().chain(self.spill.iter())
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i < N {
            self.inline[i].as_mut()
        } else {
            self.spill.get_mut(i - N)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_past_n_in_order() {
        let mut v = InlineVec::<u32, 2>::default();
        assert!(v.is_empty());
        for i in 0..5 {
            v.push(i);
        }
        assert_eq!(v.len(), 5);
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        *v.get_mut(1).unwrap() = 10;
        *v.get_mut(3).unwrap() = 30;
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), [0, 10, 2, 30, 4]);
        assert!(v.get_mut(5).is_none());
    }
}
