#include "backplane.h"
backplane *backplane_configure(const pb_host *host, pb_instance *instance, const pb_json *url)
{ host->settings_error(instance, url, "no backplane in this build"); return NULL; }
int backplane_open(backplane *bp, backplane_deliver *d, void *a) { (void)bp; (void)d; (void)a; return PB_ERROR; }
int backplane_ready(const backplane *bp) { (void)bp; return 0; }
int backplane_publish(backplane *bp, const char *t, size_t tl, const char *m, size_t ml, char *e, size_t es)
{ (void)bp; (void)t; (void)tl; (void)m; (void)ml; (void)e; (void)es; return PB_ERROR; }
void backplane_close(backplane *bp) { (void)bp; }
void backplane_free(backplane *bp) { (void)bp; }
