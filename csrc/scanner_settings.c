/*
 * pgward: set the lexer setting libpg_query's scanner reads.
 *
 * libpg_query's scanner copies the thread-local standard_conforming_strings
 * into each scan; pg_query_scan has no option for it (only the parse entry
 * points do). pgward sets it around a scan on the same thread, so the tokens
 * it fingerprints are the ones PostgreSQL itself would see in that session.
 */
#include <stdbool.h>

extern __thread bool standard_conforming_strings;

void pgward_set_standard_conforming_strings(bool on)
{
	standard_conforming_strings = on;
}
