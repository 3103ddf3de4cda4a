/* Status codes, their text (from the X-macro table in ibcomm.h) and the last-error detail. */
#include <stdio.h>
#include <string.h>

#include "ibc.h"

static _Thread_local char thread_err[IBC_ERRLEN];

const char *ibcomm_strerror(ibcomm_status_t status)
{
	switch (status) {
#define IBCOMM_X_CASE(name, value, text) \
	case name:                       \
		return text;
		IBCOMM_STATUS_TABLE(IBCOMM_X_CASE)
#undef IBCOMM_X_CASE
	}
	return "unknown status";
}

static const char *status_name(ibcomm_status_t status)
{
	switch (status) {
#define IBCOMM_X_NAME(name, value, text) \
	case name:                       \
		return #name;
		IBCOMM_STATUS_TABLE(IBCOMM_X_NAME)
#undef IBCOMM_X_NAME
	}
	return "IBCOMM_ERR_?";
}

const char *ibcomm_last_error(const ibcomm_t *comm)
{
	if (comm)
		return comm->err[0] ? comm->err : "no error";
	return thread_err[0] ? thread_err : "no error";
}

static void format_err(char *dst, ibcomm_status_t status, const char *fmt, va_list ap)
{
	int n = snprintf(dst, IBC_ERRLEN, "%s: ", status_name(status));
	if (n < 0 || n >= IBC_ERRLEN)
		n = 0;
	vsnprintf(dst + n, IBC_ERRLEN - (size_t)n, fmt, ap);
}

ibcomm_status_t ibc_err(struct ibcomm *comm, ibcomm_status_t status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	format_err(thread_err, status, fmt, ap);
	va_end(ap);
	if (comm)
		memcpy(comm->err, thread_err, IBC_ERRLEN);
	ibc_log(IBC_LOG_INFO, "%s", thread_err);
	return status;
}

ibcomm_status_t ibc_err_thread(ibcomm_status_t status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	format_err(thread_err, status, fmt, ap);
	va_end(ap);
	ibc_log(IBC_LOG_INFO, "%s", thread_err);
	return status;
}

void ibc_err_set(struct ibcomm *comm, const char *msg)
{
	snprintf(thread_err, IBC_ERRLEN, "%s", msg);
	if (comm)
		memcpy(comm->err, thread_err, IBC_ERRLEN);
}
