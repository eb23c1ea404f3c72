"""The kernel's /proc files (Linux fs/proc/): meminfo, vmstat, stat, buddyinfo, PID/maps.
"""
