/*
 * pgward: the SQLSTATE and cursor position of libpg_query's parse errors.
 *
 * libpg_query reports a parse error's message and cursor position but not
 * its SQLSTATE, and the pg_query crate keeps only the message. PostgreSQL's
 * errfinish() runs the error context callbacks while the error is still
 * current, so a callback pushed around a parse can read both with
 * geterrcode() / geterrposition(). Only the callback record's layout (three
 * pointers, unchanged since PostgreSQL 8) is assumed here.
 */
#include <stddef.h>

typedef struct ErrorContextCallback
{
	struct ErrorContextCallback *previous;
	void		(*callback) (void *arg);
	void	   *arg;
} ErrorContextCallback;

extern __thread ErrorContextCallback *error_context_stack;
extern int	geterrcode(void);
extern int	geterrposition(void);

static __thread ErrorContextCallback capture;
static __thread int captured_code;
static __thread int captured_position;

static void
record_error(void *arg)
{
	(void) arg;
	captured_code = geterrcode();
	captured_position = geterrposition();
}

/* Starts capturing on this thread (pair with pgward_error_capture_end). */
void
pgward_error_capture_begin(void)
{
	captured_code = 0;
	captured_position = 0;
	capture.previous = error_context_stack;
	capture.callback = record_error;
	capture.arg = NULL;
	error_context_stack = &capture;
}

/* Stops capturing; the last error's packed SQLSTATE and position (0: none). */
void
pgward_error_capture_end(int *code, int *position)
{
	if (error_context_stack == &capture)
		error_context_stack = capture.previous;
	*code = captured_code;
	*position = captured_position;
}
