//! Plans kept for the life of the process for the fixed queries every round runs (the WAL
//! senders, node_info): parsing and planning them each time was most of an idle worker's
//! CPU (issue 4/7). PostgreSQL re-plans a kept plan by itself when what it reads changes.

use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// `client.select(sql)` through this process's kept plan for `sql` (a query without
/// parameters), prepared on first use.
pub fn select<'conn>(client: &SpiClient<'conn>, sql: &'static str) -> SpiResult<SpiTupleTable<'conn>> {
    let plan = match PLANS.with(|p| p.borrow().get(sql).cloned()) {
        Some(plan) => plan,
        None => {
            let plan = Rc::new(client.prepare(sql, &[])?.keep());
            PLANS.with(|p| p.borrow_mut().insert(sql, plan.clone()));
            plan
        }
    };
    client.select(&*plan, None, &[])
}
