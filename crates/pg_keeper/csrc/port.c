/*
 * Read the client's Port (libpq-be.h), which pgrx binds as an opaque type: compiled against
 * the server's own headers, so the layout is always the server's.
 */
#include "postgres.h"
/*
 * Without the GSSAPI headers (not needed to build pg_keeper): libpq-be.h then keeps Port's
 * `gss` member as a `void *`, "to keep struct offsets the same (for extension ABI
 * compatibility)", and the fields read here come before it anyway.
 */
#undef ENABLE_GSS
#include "libpq/libpq-be.h"
#include <sys/socket.h>

/* The application_name of the startup packet (NULL when none). */
const char *
pgk_port_application_name(const Port *port)
{
	return port ? port->application_name : NULL;
}

/* 1 when the client came over a Unix-domain socket (on this host). */
int
pgk_port_is_local(const Port *port)
{
	return port && port->raddr.addr.ss_family == AF_UNIX;
}
