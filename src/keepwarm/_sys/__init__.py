"""What keepwarm asks of the operating system: atomic files, inotify and statfs."""
