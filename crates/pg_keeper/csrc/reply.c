/*
 * The reply gate: once a commit has been made durable and checked (gate.rs, at
 * XACT_EVENT_COMMIT), its acknowledgement still has to reach the client: PostgreSQL
 * buffers CommandComplete and ReadyForQuery and writes them out later (pq_flush). A
 * master frozen in between (SIGSTOP, a descheduled VM) would write "COMMIT" after a
 * standby was elected. So every write to the client while a commit awaits its
 * acknowledgement asks gate.rs first (`check`): through PostgreSQL's PQcommMethods
 * table, which it swaps itself for parallel workers (libpq/libpq.h).
 */
#include "postgres.h"
#undef ENABLE_GSS
#include "libpq/libpq.h"

/* 1: write; 0: do not (the check has already cut the client off). `flushing`: the
 * buffered replies are about to be handed to the kernel; else `msgtype` is about to be
 * buffered (and may be flushed with what precedes it when the buffer is full). */
typedef int (*pgk_reply_check) (int flushing, int msgtype);

static pgk_reply_check check;
static const PQcommMethods *orig;
static PQcommMethods wrapped;

static int
w_flush(void)
{
	if (!check(1, 0))
		return EOF;
	return orig->flush();
}

static int
w_flush_if_writable(void)
{
	if (!check(1, 0))
		return EOF;
	return orig->flush_if_writable();
}

static int
w_putmessage(char msgtype, const char *s, size_t len)
{
	if (!check(0, (unsigned char) msgtype))
		return EOF;
	return orig->putmessage(msgtype, s, len);
}

static void
w_putmessage_noblock(char msgtype, const char *s, size_t len)
{
	if (!check(0, (unsigned char) msgtype))
		return;
	orig->putmessage_noblock(msgtype, s, len);
}

/*
 * Route this backend's writes to its client through `cb`: once per backend. (Never again:
 * an extension that wrapped the table after us calls our wrappers as its original, and
 * wrapping its table in turn would make each call the other for ever.)
 */
void
pgk_install_reply_gate(pgk_reply_check cb)
{
	static bool installed = false;

	if (installed || PqCommMethods == NULL)
		return;
	installed = true;
	orig = PqCommMethods;
	wrapped = *orig;
	wrapped.flush = w_flush;
	wrapped.flush_if_writable = w_flush_if_writable;
	wrapped.putmessage = w_putmessage;
	wrapped.putmessage_noblock = w_putmessage_noblock;
	check = cb;
	PqCommMethods = &wrapped;
}
