//! The domain every part of the exchange shares, with no I/O: who puts records on it
//! ([`department`]), where they are ([`division`]), the identifiers records carry and their
//! check characters ([`identifiers`]), the clock and calendar people read ([`zone`]), and the
//! working days deadlines are counted in ([`calendar`]).
//!
//! These sit below `bus` so that the adapters' pure checks, the registry and the command line
//! can be compiled and tested without librdkafka.

pub mod calendar;
pub mod department;
pub mod division;
pub mod identifiers;
pub mod zone;

pub use calendar::{CalendarError, WorkingCalendar};
pub use department::{Department, DepartmentError};
pub use division::{Division, DivisionError};
