//! One libpq connection, every step under a deadline.

use crate::value::{Row, ToParam};
use pq_sys as ffi;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::ptr::NonNull;
use std::time::Instant;

/// What went wrong, with what the caller needs to decide whether to keep the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// libpq's or the server's message (server errors as "SEVERITY: message").
    pub message: String,
    /// The server's SQLSTATE, for errors the server reported.
    pub sqlstate: Option<String>,
    /// The session is over or cannot be trusted (connection failure, deadline, FATAL, a
    /// shutdown, a prepared statement the server lost): drop the connection.
    pub finished: bool,
    /// The deadline passed.
    pub timed_out: bool,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl Error {
    fn local(message: impl Into<String>) -> Error {
        Error { message: message.into(), sqlstate: None, finished: true, timed_out: false }
    }

    fn timeout(deadline_ms: u128) -> Error {
        Error {
            message: format!("no answer within {deadline_ms} ms"),
            sqlstate: None,
            finished: true,
            timed_out: true,
        }
    }
}

/// libpq's multi-line messages (one line per host tried, tab-indented hints) on one line.
fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// A connection made by libpq. Not shared between threads at once; it may move between them.
pub struct Conn {
    raw: NonNull<ffi::PGconn>,
    /// SQL text → name of the statement prepared for it on this connection.
    prepared: HashMap<String, String>,
    made: u64,
    born: Instant,
}

// SAFETY: libpq is thread-safe for distinct connections, and a PGconn may be used by any
// thread as long as one thread uses it at a time (which `&mut self` ensures).
unsafe impl Send for Conn {}

impl Drop for Conn {
    fn drop(&mut self) {
        // Non-blocking: the Terminate message is sent only if the socket takes it at once.
        // While the process exits, the connection is left to the exit (`exit::close`).
        if let Some(_inside) = crate::exit::enter() {
            unsafe { ffi::PQfinish(self.raw.as_ptr()) }
        }
    }
}

fn exiting() -> Error {
    Error::local("the process is exiting")
}

// OpenSSL's `SSL_pending`: decrypted bytes it holds that poll(2) cannot see (libpq's own
// wait checks it too). libssl is the library libpq links.
#[link(name = "ssl")]
extern "C" {
    fn SSL_pending(ssl: *const std::ffi::c_void) -> std::os::raw::c_int;
}

/// Discard the server's NOTICEs and WARNINGs (libpq's default prints them on stderr, which
/// is the server log for the worker).
unsafe extern "C" fn quiet(_arg: *mut std::ffi::c_void, _message: *const c_char) {}

#[derive(Clone, Copy)]
enum Want {
    Read,
    Write,
    Either,
}

/// Wait until `fd` is ready as wanted, or the deadline passes (Err: timed out), outside
/// libpq (`exit::outside`). `tls`: the connection's OpenSSL object, whose buffered bytes count
/// as readable.
fn wait(
    inside: &crate::exit::Inside,
    fd: i32,
    tls: *const std::ffi::c_void,
    want: Want,
    started: Instant,
    deadline: Instant,
) -> Result<(), Error> {
    if !matches!(want, Want::Write) && !tls.is_null() && unsafe { SSL_pending(tls) } > 0 {
        return Ok(());
    }
    let events = match want {
        Want::Read => libc::POLLIN,
        Want::Write => libc::POLLOUT,
        Want::Either => libc::POLLIN | libc::POLLOUT,
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::timeout(deadline.duration_since(started).as_millis()));
        }
        if fd < 0 {
            return Ok(()); // (between two hosts: libpq has no socket to wait on)
        }
        let ms = deadline.duration_since(now).as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut p = libc::pollfd { fd, events, revents: 0 };
        // SAFETY: one valid pollfd.
        let (r, go_on) = crate::exit::outside(inside, || unsafe { libc::poll(&mut p, 1, ms) });
        if !go_on {
            return Err(exiting());
        }
        if r > 0 {
            return Ok(());
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::local(format!("poll: {}", std::io::Error::last_os_error())));
        }
    }
}

fn cstring(s: &str, what: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::local(format!("{what} contains a zero byte")))
}

impl Conn {
    /// Connect with `conninfo` exactly as the walreceiver does (`PQconnectStartParams`, the
    /// conninfo expanded from `dbname`), then `overrides` (later keywords win: e.g.
    /// `application_name`), everything (every host libpq tries, TLS, authentication) done by
    /// `deadline`. A conninfo libpq cannot parse is refused with libpq's message before any
    /// connection is tried.
    pub fn connect(conninfo: &str, overrides: &[(&str, &str)], deadline: Instant) -> Result<Conn, Error> {
        let started = Instant::now();
        if Instant::now() >= deadline {
            return Err(Error { timed_out: true, ..Error::local("the deadline passed before the connection was tried") });
        }
        let inside = crate::exit::enter().ok_or_else(exiting)?;
        crate::conninfo::parse(conninfo).map_err(|m| Error::local(format!("invalid conninfo: {m}")))?;
        let mut keys = vec![cstring("dbname", "keyword")?];
        let mut values = vec![cstring(conninfo, "conninfo")?];
        // Parameters and results are read as UTF-8 here, whatever the database's encoding.
        for (k, v) in overrides.iter().chain([("client_encoding", "UTF8")].iter()) {
            keys.push(cstring(k, "keyword")?);
            values.push(cstring(v, "value")?);
        }
        let mut kp: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        let mut vp: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
        kp.push(std::ptr::null());
        vp.push(std::ptr::null());
        // SAFETY: null-terminated arrays of C strings that outlive the call.
        let raw = unsafe { ffi::PQconnectStartParams(kp.as_ptr(), vp.as_ptr(), 1) };
        let raw = NonNull::new(raw).ok_or_else(|| Error::local("out of memory connecting"))?;
        let conn = Conn { raw, prepared: HashMap::new(), made: 0, born: Instant::now() };
        if conn.status_bad() {
            return Err(Error::local(conn.libpq_message()));
        }
        // SAFETY: a live connection; `quiet` takes no state.
        unsafe { ffi::PQsetNoticeProcessor(raw.as_ptr(), Some(quiet), std::ptr::null_mut()) };
        let mut want = Want::Write;
        loop {
            wait(&inside, conn.socket(), conn.tls(), want, started, deadline)?;
            // SAFETY: a live connection.
            match unsafe { ffi::PQconnectPoll(raw.as_ptr()) } {
                ffi::PostgresPollingStatusType::PGRES_POLLING_OK => break,
                ffi::PostgresPollingStatusType::PGRES_POLLING_FAILED => {
                    return Err(Error::local(conn.libpq_message()))
                }
                ffi::PostgresPollingStatusType::PGRES_POLLING_READING => want = Want::Read,
                _ => want = Want::Write,
            }
        }
        // SAFETY: a live connection; from here no call waits inside libpq.
        if unsafe { ffi::PQsetnonblocking(raw.as_ptr(), 1) } != 0 {
            return Err(Error::local(conn.libpq_message()));
        }
        Ok(conn)
    }

    fn socket(&self) -> i32 {
        unsafe { ffi::PQsocket(self.raw.as_ptr()) }
    }

    /// The connection's OpenSSL object (null without TLS).
    fn tls(&self) -> *const std::ffi::c_void {
        unsafe { ffi::PQsslStruct(self.raw.as_ptr(), c"OpenSSL".as_ptr()) as *const std::ffi::c_void }
    }

    fn status_bad(&self) -> bool {
        unsafe { ffi::PQstatus(self.raw.as_ptr()) == ffi::ConnStatusType::CONNECTION_BAD }
    }

    fn libpq_message(&self) -> String {
        // SAFETY: libpq owns the message; it is copied at once.
        let m = unsafe { CStr::from_ptr(ffi::PQerrorMessage(self.raw.as_ptr())) };
        let m = one_line(&m.to_string_lossy());
        if m.is_empty() { "connection lost".to_string() } else { m }
    }

    /// The connection is no longer usable (the server ended it, or a failure).
    pub fn is_closed(&self) -> bool {
        unsafe { ffi::PQstatus(self.raw.as_ptr()) != ffi::ConnStatusType::CONNECTION_OK }
    }

    /// When this connection was made.
    pub fn born(&self) -> Instant {
        self.born
    }

    /// TLS protects this connection.
    pub fn ssl_in_use(&self) -> bool {
        unsafe { ffi::PQsslInUse(self.raw.as_ptr()) == 1 }
    }

    /// Run `sql` with `params` (prepared once per connection and SQL text), all by
    /// `deadline`: the rows.
    pub fn query(&mut self, sql: &str, params: &[&dyn ToParam], deadline: Instant) -> Result<Vec<Row>, Error> {
        self.run_prepared(sql, params, deadline).map(|(rows, _)| rows)
    }

    /// Exactly one row (else an error naming how many came).
    pub fn query_one(&mut self, sql: &str, params: &[&dyn ToParam], deadline: Instant) -> Result<Row, Error> {
        let mut rows = self.query(sql, params, deadline)?;
        if rows.len() != 1 {
            return Err(Error { finished: false, ..Error::local(format!("expected one row, got {}", rows.len())) });
        }
        Ok(rows.remove(0))
    }

    /// Run a statement with parameters: the rows it affected.
    pub fn execute(&mut self, sql: &str, params: &[&dyn ToParam], deadline: Instant) -> Result<u64, Error> {
        self.run_prepared(sql, params, deadline).map(|(_, n)| n)
    }

    /// Run one or more statements without parameters (the simple query protocol).
    pub fn batch(&mut self, sql: &str, deadline: Instant) -> Result<(), Error> {
        let started = Instant::now();
        let inside = crate::exit::enter().ok_or_else(exiting)?;
        let q = cstring(sql, "query")?;
        // SAFETY: a live connection and a C string outliving the call.
        if unsafe { ffi::PQsendQuery(self.raw.as_ptr(), q.as_ptr()) } != 1 {
            return Err(self.send_failed());
        }
        self.results(&inside, started, deadline).map(|_| ())
    }

    fn send_failed(&self) -> Error {
        Error { finished: true, ..Error::local(self.libpq_message()) }
    }

    fn run_prepared(
        &mut self,
        sql: &str,
        params: &[&dyn ToParam],
        deadline: Instant,
    ) -> Result<(Vec<Row>, u64), Error> {
        let started = Instant::now();
        let inside = crate::exit::enter().ok_or_else(exiting)?;
        let name = match self.prepared.get(sql) {
            Some(n) => n.clone(),
            None => {
                // A fresh name every time: a statement dropped from the cache after an error
                // may still exist on the server.
                self.made += 1;
                let name = format!("pgkeeper_{}", self.made);
                let (n, q) = (cstring(&name, "name")?, cstring(sql, "query")?);
                // SAFETY: as in `batch`; parameter types are left to the SQL's casts.
                let sent = unsafe {
                    ffi::PQsendPrepare(self.raw.as_ptr(), n.as_ptr(), q.as_ptr(), params.len() as i32, std::ptr::null())
                };
                if sent != 1 {
                    return Err(self.send_failed());
                }
                self.results(&inside, started, deadline)?;
                self.prepared.insert(sql.to_string(), name.clone());
                name
            }
        };
        let texts: Vec<Option<CString>> = params
            .iter()
            .map(|p| p.to_param().map(|s| cstring(&s, "parameter")).transpose())
            .collect::<Result<_, _>>()?;
        let ptrs: Vec<*const c_char> =
            texts.iter().map(|t| t.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())).collect();
        let n = cstring(&name, "name")?;
        // SAFETY: `texts` outlives the call; text format in and out.
        let sent = unsafe {
            ffi::PQsendQueryPrepared(
                self.raw.as_ptr(),
                n.as_ptr(),
                ptrs.len() as i32,
                ptrs.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                0,
            )
        };
        if sent != 1 {
            return Err(self.send_failed());
        }
        // (a statement whose result type changed, or one the server lost, fails with 0A000 or
        // 26000: `finished`, and the connection, its statements with it, is dropped)
        self.results(&inside, started, deadline)
    }

    /// Send what is queued and read every result of the command: its rows, the rows it
    /// affected, or the first error.
    fn results(
        &mut self,
        inside: &crate::exit::Inside,
        started: Instant,
        deadline: Instant,
    ) -> Result<(Vec<Row>, u64), Error> {
        let raw = self.raw.as_ptr();
        loop {
            // SAFETY (this block and the next): a live connection, results freed once read.
            match unsafe { ffi::PQflush(raw) } {
                0 => break,
                1 => {
                    wait(inside, self.socket(), self.tls(), Want::Either, started, deadline)?;
                    if unsafe { ffi::PQconsumeInput(raw) } == 0 {
                        return Err(self.send_failed());
                    }
                }
                _ => return Err(self.send_failed()),
            }
        }
        let mut rows = Vec::new();
        let mut affected = 0;
        let mut error: Option<Error> = None;
        loop {
            while unsafe { ffi::PQisBusy(raw) } == 1 {
                wait(inside, self.socket(), self.tls(), Want::Read, started, deadline)?;
                if unsafe { ffi::PQconsumeInput(raw) } == 0 {
                    return Err(self.send_failed());
                }
            }
            let res = unsafe { ffi::PQgetResult(raw) };
            if res.is_null() {
                break;
            }
            use ffi::ExecStatusType::*;
            match unsafe { ffi::PQresultStatus(res) } {
                PGRES_TUPLES_OK | PGRES_SINGLE_TUPLE => {
                    rows.extend(unsafe { read_rows(res) });
                    affected = unsafe { cmd_tuples(res) };
                }
                PGRES_COMMAND_OK | PGRES_EMPTY_QUERY => affected = unsafe { cmd_tuples(res) },
                PGRES_COPY_IN | PGRES_COPY_OUT | PGRES_COPY_BOTH => {
                    unsafe { ffi::PQclear(res) };
                    return Err(Error::local("COPY is not supported here"));
                }
                _ => {
                    if error.is_none() {
                        error = Some(unsafe { self.server_error(res) });
                    }
                }
            }
            unsafe { ffi::PQclear(res) };
        }
        match error {
            Some(e) => Err(e),
            None => Ok((rows, affected)),
        }
    }

    /// The error in `res`: the server's message with its severity and SQLSTATE, or libpq's
    /// (a lost connection).
    unsafe fn server_error(&self, res: *mut ffi::PGresult) -> Error {
        let field = |code: u8| {
            let p = ffi::PQresultErrorField(res, code as i32);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        };
        let sqlstate = field(ffi::PG_DIAG_SQLSTATE);
        let severity = field(ffi::PG_DIAG_SEVERITY_NONLOCALIZED).or(field(ffi::PG_DIAG_SEVERITY));
        let message = match (&severity, field(ffi::PG_DIAG_MESSAGE_PRIMARY)) {
            (Some(s), Some(m)) => format!("{s}: {m}"),
            (_, Some(m)) => m,
            _ => {
                let m = one_line(&CStr::from_ptr(ffi::PQresultErrorMessage(res)).to_string_lossy());
                if m.is_empty() { self.libpq_message() } else { m }
            }
        };
        let code = sqlstate.as_deref().unwrap_or("");
        let finished = self.is_closed()
            || matches!(severity.as_deref(), Some("FATAL" | "PANIC"))
            || sqlstate.is_none()
            || code.starts_with("08")
            || code.starts_with("57P")
            || code == "0A000"
            || code == "26000";
        Error { message, sqlstate, finished, timed_out: false }
    }
}

unsafe fn cmd_tuples(res: *mut ffi::PGresult) -> u64 {
    CStr::from_ptr(ffi::PQcmdTuples(res)).to_str().ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

unsafe fn read_rows(res: *mut ffi::PGresult) -> Vec<Row> {
    let (n, cols) = (ffi::PQntuples(res), ffi::PQnfields(res));
    (0..n)
        .map(|r| Row {
            values: (0..cols)
                .map(|c| {
                    (ffi::PQgetisnull(res, r, c) == 0)
                        .then(|| CStr::from_ptr(ffi::PQgetvalue(res, r, c)).to_string_lossy().into_owned())
                })
                .collect(),
        })
        .collect()
}
