# description: a 1G page from a boot-time pool (hugepagesz=1G hugepages=1) on a 2G machine
boot mem=2G hugepages_1g=1
spawn bigdb
mmap arena 1G huge1g
touch arena 0 8K
touch arena 512M 4K
report maps,meminfo
