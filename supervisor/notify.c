/*
 * notify.c: systemd Type=notify support. sd_notify() is itself a no-op when
 * NOTIFY_SOCKET is unset, so without systemd all of this does nothing.
 * Only the supervisor (the unit's main pid) notifies: NotifyAccess=main.
 */
#include <stdint.h>
#include <stdlib.h>

#include <systemd/sd-daemon.h>

#include "sup.h"

void notify_ready(const char *status) { sd_notifyf(0, "READY=1\nSTATUS=%s", status); }

void notify_status(const char *status) { sd_notifyf(0, "STATUS=%s", status); }

void notify_reloading(void) { sd_notify(0, "RELOADING=1\nSTATUS=reloading configuration"); }

void notify_stopping(void) { sd_notify(0, "STOPPING=1\nSTATUS=stopping"); }

void notify_watchdog(void) { sd_notify(0, "WATCHDOG=1"); }

uint64_t notify_watchdog_usec(void)
{
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0)
        return usec;
    return 0;
}
