# description: shared anonymous memory under pressure: shmem pages go to swap and come back; every slot is freed at exit
boot mem=64M swap=64M
spawn producer
mmap shm 32M shared
touch shm
fork consumer
use consumer
malloc a 32M
touch a
load shm
touch shm 0 4M
report free
exit consumer
exit producer
report free
