//! Faults a test can inject, and the store that holds them until the event they match.
//!
//! Every fault is one-shot: it waits for the next matching event (a prompt submission, a node
//! execution, a history request, an HTTP request, a websocket frame) and is consumed by it.
//! Injecting the same fault twice arms it twice.

use std::collections::VecDeque;
use std::time::Duration;

/// A one-shot fault; see [`crate::Sim::inject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `POST /prompt` that would be accepted answers 400
    /// `prompt_outputs_failed_validation`, with `node_errors` on its first output node.
    RejectNextPrompt,
    /// The next execution of `node` (any node when `None`) fails with `execution_error`,
    /// `exception_type` `Exception` and this message.
    ExecutionError {
        node: Option<String>,
        message: String,
    },
    /// The next executed node fails with ComfyUI's out-of-memory error
    /// (`torch.OutOfMemoryError`, "Allocation on device").
    OutOfMemory,
    /// The next prompt that executes a node is interrupted after its first executed node, as
    /// if `POST /interrupt` arrived then: the next node to start reports
    /// `execution_interrupted`. A prompt with nothing left to run still succeeds, as in ComfyUI.
    InterruptNext,
    /// Every websocket is closed after this many more frames (counted once per frame, however
    /// many sockets it reaches). Clients may reconnect at once.
    DropWebsockets { after_frames: usize },
    /// The next `GET /history` or `GET /history/{id}` answers after this delay.
    SlowHistory(Duration),
    /// GC-like: from the next HTTP request on, the server answers nothing for this long.
    Stall(Duration),
    /// The next prompt to finish is written to the history with `"status": null` (its
    /// outputs and `meta` as usual). `shared/comfyui/NEWER.md` says 2026 servers can answer
    /// that, not when; this fault is how a test gets one, in either protocol.
    NullHistoryStatus,
}

/// What a node execution fault turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeFault {
    Error(String),
    OutOfMemory,
}

/// Armed faults other than the websocket and stall ones, which live beside what they affect.
#[derive(Debug, Default)]
pub(crate) struct Armed {
    rejects: usize,
    node_faults: VecDeque<(Option<String>, NodeFault)>,
    interrupts: usize,
    slow_history: VecDeque<Duration>,
    null_status: usize,
}

impl Armed {
    pub(crate) fn arm_reject(&mut self) {
        self.rejects += 1;
    }

    pub(crate) fn arm_node_fault(&mut self, node: Option<String>, fault: NodeFault) {
        self.node_faults.push_back((node, fault));
    }

    pub(crate) fn arm_interrupt(&mut self) {
        self.interrupts += 1;
    }

    pub(crate) fn arm_slow_history(&mut self, delay: Duration) {
        self.slow_history.push_back(delay);
    }

    pub(crate) fn take_reject(&mut self) -> bool {
        let armed = self.rejects > 0;
        self.rejects = self.rejects.saturating_sub(1);
        armed
    }

    /// The first armed fault that matches a node about to execute.
    pub(crate) fn take_node_fault(&mut self, node: &str) -> Option<NodeFault> {
        let at = self
            .node_faults
            .iter()
            .position(|(want, _)| want.as_deref().is_none_or(|w| w == node))?;
        self.node_faults.remove(at).map(|(_, fault)| fault)
    }

    pub(crate) fn take_interrupt(&mut self) -> bool {
        let armed = self.interrupts > 0;
        self.interrupts = self.interrupts.saturating_sub(1);
        armed
    }

    pub(crate) fn arm_null_status(&mut self) {
        self.null_status += 1;
    }

    pub(crate) fn take_null_status(&mut self) -> bool {
        let armed = self.null_status > 0;
        self.null_status = self.null_status.saturating_sub(1);
        armed
    }

    pub(crate) fn take_slow_history(&mut self) -> Option<Duration> {
        self.slow_history.pop_front()
    }
}
