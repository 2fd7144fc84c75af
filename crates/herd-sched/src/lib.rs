//! herd-sched
