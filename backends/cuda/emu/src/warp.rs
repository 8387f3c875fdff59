//! Warp collectives: the lane arithmetic of `shfl.sync` and `vote.sync`,
//! applied to all lanes of a warp at once by the scheduler.

use crate::inst::ShflMode;

/// The lane that `lane` reads from in `shfl.sync.MODE`, following the PTX
/// ISA's definition:
///
/// ```text
/// bval = b & 0x1f;  cval = c & 0x1f;  segmask = (c >> 8) & 0x1f;
/// maxLane = (lane & segmask) | (cval & ~segmask);
/// minLane = lane & segmask;
/// up:   j = lane - bval;                    pval = j >= maxLane;
/// down: j = lane + bval;                    pval = j <= maxLane;
/// bfly: j = lane ^ bval;                    pval = j <= maxLane;
/// idx:  j = minLane | (bval & ~segmask);    pval = j <= maxLane;
/// if !pval { j = lane }   // out of range: the lane keeps its own value
/// ```
///
/// For a whole-warp shuffle `c` is `0x1f` (`0` for `up`); a width-`w`
/// shuffle puts `32 - w` in `c[12:8]`.
pub(crate) fn shfl_source(mode: ShflMode, lane: u32, b: u32, c: u32) -> u32 {
    let (bval, cval, segmask) = (b & 0x1f, c & 0x1f, (c >> 8) & 0x1f);
    let max_lane = i64::from((lane & segmask) | (cval & !segmask));
    let min_lane = lane & segmask;
    // Signed, because `up` can step below lane 0.
    let (j, pval) = match mode {
        ShflMode::Up => {
            let j = i64::from(lane) - i64::from(bval);
            (j, j >= max_lane)
        }
        ShflMode::Down => {
            let j = i64::from(lane + bval);
            (j, j <= max_lane)
        }
        ShflMode::Bfly => {
            let j = i64::from(lane ^ bval);
            (j, j <= max_lane)
        }
        ShflMode::Idx => {
            let j = i64::from(min_lane | (bval & !segmask));
            (j, j <= max_lane)
        }
    };
    if pval {
        j as u32
    } else {
        lane
    }
}

/// The `vote.sync.ballot.b32` result: bit `i` set when lane `i`'s
/// predicate is true.
pub(crate) fn ballot(preds: impl Iterator<Item = bool>) -> u32 {
    preds
        .enumerate()
        .filter(|&(_, p)| p)
        .fold(0, |acc, (i, _)| acc | (1 << i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ShflMode::*;

    #[test]
    fn lane_selection_follows_the_isa() {
        assert_eq!(shfl_source(Bfly, 5, 1, 0x1f), 4);
        assert_eq!(shfl_source(Down, 30, 4, 0x1f), 30);
        assert_eq!(shfl_source(Down, 27, 4, 0x1f), 31);
        assert_eq!(shfl_source(Up, 2, 4, 0), 2);
        assert_eq!(shfl_source(Up, 6, 4, 0), 2);
        assert_eq!(shfl_source(Idx, 9, 3, 0x1f), 3);
        assert_eq!(shfl_source(Idx, 9, 35, 0x1f), 3);
        // Width 16 (segmask 16): segments of 16 lanes.
        assert_eq!(shfl_source(Down, 13, 4, 0x101f), 13);
        assert_eq!(shfl_source(Down, 17, 4, 0x101f), 21);
        assert_eq!(shfl_source(Up, 17, 4, 0x1000), 17);
        assert_eq!(shfl_source(Up, 21, 4, 0x1000), 17);
        assert_eq!(shfl_source(Idx, 20, 3, 0x101f), 19);
        // As CUDA documents for width < 32, bfly may reach an earlier
        // segment but not a later one.
        assert_eq!(shfl_source(Bfly, 20, 16, 0x101f), 4);
        assert_eq!(shfl_source(Bfly, 4, 16, 0x101f), 4);
        assert_eq!(ballot([true, false, true].into_iter()), 0b101);
    }
}
