/* vx_chaos: fault injection built into the services, off unless configured.
 *
 * Crash points are named places in the code (vx_chaos_point("after_commit_before_publish")) where
 * the process can be made to die abruptly, as a kill -9 would, to prove that no state is lost or
 * applied twice. VX_CRASH_POINTS="name[@N],..." arms them: the process calls _exit(70) at the Nth
 * hit of that point (the first when N is absent). Unarmed points cost one load and a branch. */
#ifndef VX_CHAOS_H
#define VX_CHAOS_H

#define VX_CHAOS_EXIT_CODE 70

/* Reads VX_CRASH_POINTS. Returns 0, or -1 with errstr on a malformed value. */
int vx_chaos_init(char *errstr, unsigned long errstr_size);
void vx_chaos_point(const char *name);

#endif
