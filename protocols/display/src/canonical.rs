//! A comparable description of everything a display shows or will draw with, for the replay
//! tests and the fuzz target: two displays that describe equal are indistinguishable to
//! any later instruction.

use std::collections::BTreeMap;

use crate::display::{Display, Mouse};
use crate::path::PathOp;
use crate::surface::Surface;

/// See the module documentation.
#[derive(Debug, PartialEq)]
pub(crate) struct Canonical {
    layers: BTreeMap<i32, CanonicalLayer>,
    /// The children of each parent, bottom to top (by Z, then attachment order).
    children: BTreeMap<Parent, Vec<i32>>,
    cursor: Option<((i32, i32), Surface)>,
    mouse: Option<Mouse>,
    timestamp: u64,
}

#[derive(Debug, PartialEq)]
struct CanonicalLayer {
    surface: Surface,
    /// Parent, x, y, z, opacity, distortion matrix (as bits, to compare exactly).
    node: Option<(Parent, i32, i32, i32, u8, [u64; 6])>,
    mask: u8,
    path: Option<(Vec<PathOp>, bool)>,
}

/// A parent, with detached groups named by their smallest live member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Parent {
    Root,
    Live(i32),
    Detached(i32),
}

impl Display {
    pub(crate) fn canonical(&self) -> Canonical {
        // Name each detached group (by dead parent serial) after its smallest member.
        let mut groups: BTreeMap<u64, i32> = BTreeMap::new();
        for (&index, layer) in &self.layers {
            if let Some(parent) = layer.node.and_then(|n| n.parent)
                && self.live_parent(index).is_none()
            {
                let name = groups.entry(parent.serial).or_insert(index);
                *name = (*name).min(index);
            }
        }
        let parent_of = |index: i32| -> Option<Parent> {
            let parent = self.layers.get(&index)?.node?.parent;
            Some(match parent {
                None => Parent::Root,
                Some(p) => match self.live_parent(index) {
                    Some(live) => Parent::Live(live),
                    None => Parent::Detached(groups.get(&p.serial).copied().unwrap_or(i32::MIN)),
                },
            })
        };
        let mut layers = BTreeMap::new();
        let mut children: BTreeMap<Parent, Vec<(i32, u64, i32)>> = BTreeMap::new();
        for (&index, layer) in &self.layers {
            let node = layer.node.and_then(|node| {
                let parent = parent_of(index)?;
                if parent != Parent::Root {
                    children
                        .entry(parent)
                        .or_default()
                        .push((node.z, node.attach, index));
                }
                Some((
                    parent,
                    node.x,
                    node.y,
                    node.z,
                    node.opacity,
                    node.matrix.0.map(f64::to_bits),
                ))
            });
            layers.insert(
                index,
                CanonicalLayer {
                    surface: layer.surface.clone(),
                    node,
                    mask: layer.state.op.mask(),
                    path: layer.path.ops().map(|(ops, closed)| (ops.to_vec(), closed)),
                },
            );
        }
        let children = children
            .into_iter()
            .map(|(parent, mut list)| {
                list.sort_unstable();
                (
                    parent,
                    list.into_iter().map(|(_, _, index)| index).collect(),
                )
            })
            .collect();
        Canonical {
            layers,
            children,
            cursor: self
                .cursor
                .set
                .then(|| (self.cursor.hotspot, self.cursor.surface.clone())),
            mouse: self.mouse,
            timestamp: self.timestamp.unwrap_or(0),
        }
    }
}
