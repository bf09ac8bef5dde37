# install.cmake - what `cmake --install` puts where (included at the end of
# the top-level CMakeLists.txt).  GNUInstallDirs paths: with the usual
# CMAKE_INSTALL_PREFIX=/usr the programs go to /usr/sbin, the units to
# /usr/lib/systemd/system; configuration goes to CMAKE_INSTALL_FULL_SYSCONFDIR,
# which is /etc for the /usr prefix (and for Debian's packaging) and
# <prefix>/etc otherwise.  Configuration files that already exist are not
# overwritten (an admin's edited /etc/relayd/relayd.conf survives a reinstall).
# DESTDIR staging (the Debian package) works as usual.
include(GNUInstallDirs)

set(RELAY_CONTRIB ${CMAKE_CURRENT_LIST_DIR})

install(TARGETS relayd relayctl RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})

# Man pages: written in mdoc under man/; installed when present.
foreach(page relayd.8 relayctl.8 relayd.conf.5)
  string(REGEX REPLACE ".*\\.([0-9])$" "\\1" section ${page})
  install(FILES ${CMAKE_SOURCE_DIR}/man/${page}
    DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section} OPTIONAL)
endforeach()

# systemd: the unit, the system user, the directories.  These live under
# <prefix>/lib whatever the architecture (systemd does not look in lib64 or
# lib/<triplet>).  Debian bookworm's package puts the unit in /lib instead.
set(RELAY_SYSTEMD_UNITDIR ${CMAKE_INSTALL_PREFIX}/lib/systemd/system CACHE PATH
  "where relayd.service is installed")
install(FILES ${RELAY_CONTRIB}/systemd/relayd.service DESTINATION ${RELAY_SYSTEMD_UNITDIR})
install(FILES ${RELAY_CONTRIB}/systemd/relayd.sysusers
  DESTINATION ${CMAKE_INSTALL_PREFIX}/lib/sysusers.d RENAME relayd.conf)
install(FILES ${RELAY_CONTRIB}/systemd/relayd.tmpfiles
  DESTINATION ${CMAKE_INSTALL_PREFIX}/lib/tmpfiles.d RENAME relayd.conf)

# Configuration under sysconfdir, each file only when not there yet.
# install(CODE) runs at install time; file(INSTALL) adds DESTDIR itself.
set(RELAY_ETC ${CMAKE_INSTALL_FULL_SYSCONFDIR})
function(relay_install_conf src dir name)
  install(CODE "
    if(EXISTS \"\$ENV{DESTDIR}${dir}/${name}\")
      message(STATUS \"Kept (exists): \$ENV{DESTDIR}${dir}/${name}\")
    else()
      file(INSTALL \"${src}\" DESTINATION \"${dir}\" RENAME \"${name}\"
        FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
    endif()")
endfunction()

relay_install_conf(${RELAY_CONTRIB}/relayd.conf ${RELAY_ETC}/relayd relayd.conf)
relay_install_conf(${RELAY_CONTRIB}/logrotate/relayd ${RELAY_ETC}/logrotate.d relayd)
relay_install_conf(${RELAY_CONTRIB}/fail2ban/filter.d/relayd.conf ${RELAY_ETC}/fail2ban/filter.d relayd.conf)
relay_install_conf(${RELAY_CONTRIB}/fail2ban/jail.d/relayd.conf ${RELAY_ETC}/fail2ban/jail.d relayd.conf)
