# description: MAP_SHARED|MAP_ANONYMOUS memory is shmem: shared across fork, counted as Shmem and Cached
boot mem=64M
spawn producer
mmap shm 1M shared
touch shm
fork consumer
use consumer
load shm
touch shm 0 4K
report maps,meminfo
exit producer
exit consumer
report free
