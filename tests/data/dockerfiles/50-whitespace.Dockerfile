   FROM    alpine   AS   spaced   
	 RUN 	 echo   tabs	


   EXPOSE   80		81   
