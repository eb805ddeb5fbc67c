//! What runs on the head node: the scheduler actor that answers placement requests from the
//! cluster's live view (members that are up, their reported resources and measured links), so
//! every coordinator places against the same view.

mod scheduler;
mod view;

pub use scheduler::{
    PlaceAnswer, PlaceAsk, PolicySpec, SCHEDULER_NAME, SchedulerActor, SchedulerAskError,
    SchedulerMsg, SchedulerReply, answer, ask_placement, holds_all,
};
pub use view::{ScheduleError, cluster_view, measured_link, place_id, runtime_id, schedule};
